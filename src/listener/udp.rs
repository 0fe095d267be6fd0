//! UDP listener (RFC 1035 §4.2.1): one SO_REUSEPORT socket per worker, each
//! served by an OS thread of its own that sits in a blocking `recvmmsg`.
//!
//! Why a thread and not a tokio task: a cache hit costs little more than the
//! kernel's loopback path, and a readiness loop added an `epoll_wait` and an
//! `EAGAIN`-returning `recvmmsg` for nearly every batch — half of all system
//! calls on a hot-cache load (issue 14). A blocking `recvmmsg` with
//! `MSG_WAITFORONE` sleeps in the kernel until a datagram comes, then takes
//! whatever else is queued, up to `BATCH`; the replies leave in one
//! `sendmmsg`. That is the floor's pattern (benches/canned_responder.rs).
//!
//! Cache hits and local zones are answered in place on the thread; misses
//! ([`Step::Resolve`]) are resolved on the tokio runtime, which sends their
//! replies on the same socket (non-blocking), so they leave from the
//! address and port the query came to. The thread never waits for the
//! runtime: the misses of one batch (23 on average in a cold dnsperf run)
//! are handed over as one task spawn, which answers the first itself and
//! spawns a task for each of the others from inside the runtime: there a
//! spawn is a push onto the worker's own queue, where a spawn from outside
//! goes through the runtime's shared, locked queue and checks for a worker
//! to wake. Handing over is bounded by `max_pending` queued misses per
//! socket (beyond that they are dropped and counted as `dropped`, as the
//! handler does for resolutions).
//!
//! Stopping: the socket has a receive timeout of `WAKE`, so an idle
//! thread looks at its stop flag at least that often; a busy one looks
//! after every batch. The flag is raised when the listener's cancellation
//! token fires (shutdown, or a reload that drops the address) or when the
//! runtime drops the serving task; the socket closes once the thread and
//! the misses still in flight have let go of it.

use super::BindError;
use crate::handler::{truncate_reply, Handler, Step, Transport};
use crate::metrics::Metrics;
use socket2::{Domain, Protocol, SockAddr, SockRef, Socket, Type};
use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long a blocking receive (or a send into a full buffer) waits before
/// the thread looks at its stop flag again: how late, at most, an idle
/// socket notices a shutdown or a reload. Ten wake-ups a second per idle
/// socket cost nothing measurable.
const WAKE: Duration = Duration::from_millis(100);

/// Binds one UDP socket with SO_REUSEPORT (so siblings can share the port),
/// blocking with `WAKE` as its timeouts, for [`serve`]'s thread.
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
    if addr.is_ipv4() {
        // Replies leave with DF set and are never fragmented (DNS Flag
        // Day 2020's aim): they are held to the client's EDNS size and
        // `udp_payload_size` (1232 by default), so they fit any
        // interface, and a reply a router could not pass is better lost
        // (the client retries or asks over TCP) than split into
        // fragments that can be spoofed. PROBE, not DO: the path MTU is
        // ignored, so a forged ICMP "fragmentation needed" cannot shrink
        // what we send. A side effect the hot path feels: a DF datagram
        // needs no IP ID from the kernel's hashed generator, which was 3%
        // of a cache hit's CPU.
        mmsg::set_dont_fragment(sock.as_raw_fd()).map_err(err)?;
    }
    sock.set_nonblocking(false).map_err(err)?;
    sock.set_read_timeout(Some(WAKE)).map_err(err)?;
    sock.set_write_timeout(Some(WAKE)).map_err(err)?;
    // Bursts of queries must not be dropped by a small default buffer.
    let _ = sock.set_recv_buffer_size(4 << 20);
    let _ = sock.set_send_buffer_size(4 << 20);
    sock.bind(&addr.into()).map_err(err)?;
    Ok(sock.into())
}

/// Datagrams read or written per system call.
const BATCH: usize = 32;
/// Receive buffer per datagram. A query longer than this is not a query
/// worth answering (the kernel flags it MSG_TRUNC and it is dropped).
const MAX_QUERY: usize = 4096;
/// Pause after an unexpected receive error, so a socket in a bad state
/// cannot spin the thread.
const ERROR_PAUSE: Duration = Duration::from_millis(10);
/// Tries, a millisecond apart, at sending a resolved reply into a full
/// socket buffer before it is dropped (the client will ask again).
const SEND_TRIES: usize = 50;

/// Serves one socket on a thread of its own until `shutdown` fires (or
/// this future is dropped); returns once the thread has stopped.
///
/// Misses run as tasks in `tasks` on the runtime this is polled on, so
/// [`TaskTracker::wait`] covers them as before.
pub async fn serve(
    sock: Arc<UdpSocket>,
    handler: Arc<Handler>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
    let stop = Arc::new(AtomicBool::new(false));
    // Raised on every way out of here, so the thread never outlives us by
    // more than WAKE: also when the runtime drops this future unpolled.
    let raise = Raise(stop.clone());
    let local = sock.local_addr().ok();
    let limit = handler.max_pending();
    let hot = Hot {
        sock,
        handler,
        stop,
        tasks,
        rt: Handle::current(),
        queued: Arc::new(AtomicUsize::new(0)),
        limit,
    };
    let (done_tx, mut done_rx) = tokio::sync::oneshot::channel::<()>();
    let started = std::thread::Builder::new()
        .name("resolvd-udp".into())
        .spawn(move || {
            hot.run();
            drop(done_tx);
        });
    if let Err(e) = started {
        // The socket was dropped with the closure: the kernel spreads its
        // share of clients over the sibling sockets.
        tracing::error!("udp {local:?}: cannot start a thread ({e}); socket closed");
        return;
    }
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = &mut done_rx => {
            tracing::error!("udp {local:?}: listener thread ended (panic); socket closed");
            return;
        }
    }
    drop(raise);
    let _ = done_rx.await;
}

/// Sets the stop flag when dropped.
struct Raise(Arc<AtomicBool>);

impl Drop for Raise {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// What the listener thread owns.
struct Hot {
    sock: Arc<UdpSocket>,
    handler: Arc<Handler>,
    stop: Arc<AtomicBool>,
    tasks: TaskTracker,
    rt: Handle,
    /// Misses handed to the runtime whose task has not started yet.
    queued: Arc<AtomicUsize>,
    /// `max_pending`: the most of those allowed.
    limit: usize,
}

impl Hot {
    /// The receive loop. Allocates its buffers once; a cache hit costs a
    /// share of one `recvmmsg` and one `sendmmsg`, and nothing else outside
    /// the handler.
    fn run(self) {
        // The fast path may start a prefetch (`tokio::spawn`).
        let _rt = self.rt.enter();
        let fd = self.sock.as_raw_fd();
        let mut batch = mmsg::Batch::new(BATCH, MAX_QUERY);
        let mut replies: Vec<Vec<u8>> = (0..BATCH).map(|_| Vec::with_capacity(1232)).collect();
        let mut dests: Vec<SocketAddr> = Vec::with_capacity(BATCH);
        let mut sender = mmsg::SendBatch::new(BATCH);
        let mut local = self.handler.local();
        let mut misses: Vec<(Vec<u8>, SocketAddr)> = Vec::with_capacity(BATCH);
        loop {
            let got = batch.recv_wait(fd);
            // Checked before answering: once stopped, nothing more is
            // answered, even what was already queued.
            if self.stop.load(Ordering::Acquire) {
                return;
            }
            let n = match got {
                Ok(n) => n,
                Err(e) => {
                    // WouldBlock is the WAKE timeout.
                    if !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) {
                        tracing::debug!("udp receive: {e}");
                        std::thread::sleep(ERROR_PAUSE);
                    }
                    continue;
                }
            };
            dests.clear();
            local.now = std::time::Instant::now();
            for i in 0..n {
                let Some((pkt, peer)) = batch.get(i) else {
                    continue;
                };
                let Some(out) = replies.get_mut(dests.len()) else {
                    break;
                };
                match self
                    .handler
                    .answer_now_in(pkt, peer, Transport::Udp, out, Some(&mut local))
                {
                    Step::Reply => dests.push(peer),
                    Step::Drop => {}
                    Step::Resolve => self.take_miss(pkt, peer, &mut misses),
                }
            }
            self.hand_over(&mut misses);
            let sent = dests.len();
            send_all(
                &mut sender,
                fd,
                replies.get_mut(..sent).unwrap_or(&mut []),
                &dests,
            );
        }
    }

    /// Keeps a miss for [`Hot::hand_over`]. Never waits: when `limit`
    /// misses are already queued (the runtime is not keeping up), the
    /// query is dropped.
    fn take_miss(&self, pkt: &[u8], peer: SocketAddr, misses: &mut Vec<(Vec<u8>, SocketAddr)>) {
        if self.queued.fetch_add(1, Ordering::Relaxed) >= self.limit {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            Metrics::inc(&self.handler.metrics.dropped);
            return;
        }
        misses.push((pkt.to_vec(), peer));
    }

    /// Gives the misses of a batch to the runtime as one task, which
    /// starts a task for each miss but the first and answers the first
    /// itself. A spawn on a worker thread is a push onto its own queue,
    /// but the task's setup and removal still cost ~2,000 instructions,
    /// 5% of a cold miss's user-space work; and a lightly loaded server's
    /// batch is a single miss.
    fn hand_over(&self, misses: &mut Vec<(Vec<u8>, SocketAddr)>) {
        if misses.is_empty() {
            return;
        }
        let batch = std::mem::replace(misses, Vec::with_capacity(BATCH));
        let sock = self.sock.clone();
        let handler = self.handler.clone();
        let queued = self.queued.clone();
        let tasks = self.tasks.clone();
        // Boxed for the reason given in `Handler::resolve_shared`.
        self.tasks.spawn_on(
            Box::pin(async move {
                let mut batch = batch.into_iter();
                let first = batch.next();
                for (pkt, peer) in batch {
                    let sock = sock.clone();
                    let handler = handler.clone();
                    let queued = queued.clone();
                    tasks.spawn(Box::pin(async move {
                        queued.fetch_sub(1, Ordering::Relaxed);
                        answer_miss(pkt, peer, &sock, &handler).await;
                    }));
                }
                if let Some((pkt, peer)) = first {
                    queued.fetch_sub(1, Ordering::Relaxed);
                    answer_miss(pkt, peer, &sock, &handler).await;
                }
            }),
            &self.rt,
        );
    }
}

/// Resolves one miss and sends its reply.
async fn answer_miss(pkt: Vec<u8>, peer: SocketAddr, sock: &UdpSocket, handler: &Arc<Handler>) {
    let mut out = Vec::with_capacity(1024);
    handler
        .answer_resolved(&pkt, peer, Transport::Udp, &mut out)
        .await;
    if !out.is_empty() {
        send_reply(sock, &mut out, peer).await;
    }
}

/// Sends every reply, a `sendmmsg` at a time. A reply too big for the
/// interface (DF is set, see [`bind`]) goes again cut down to TC=1, so the
/// client asks over TCP instead of waiting out a timeout. A datagram the
/// kernel refuses otherwise (no route to the client) is dropped and the
/// rest still go; when the buffer is still full after `WAKE`, the rest of
/// the batch is dropped too, rather than waiting WAKE for each.
fn send_all(sender: &mut mmsg::SendBatch, fd: i32, replies: &mut [Vec<u8>], dests: &[SocketAddr]) {
    let mut done = 0;
    let mut truncated = None;
    while let (Some(r), Some(d)) = (replies.get(done..), dests.get(done..)) {
        if r.is_empty() || d.is_empty() {
            return;
        }
        match sender.send(fd, r, d) {
            Ok(k) if k > 0 => done += k,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => return,
            Err(e) if too_big(&e) && truncated != Some(done) => {
                if let Some(reply) = replies.get_mut(done) {
                    truncate_reply(reply);
                }
                truncated = Some(done);
            }
            _ => done += 1,
        }
    }
}

/// EMSGSIZE: the datagram is larger than the interface MTU allows.
fn too_big(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(libc::EMSGSIZE)
}

/// Sends a resolved reply from a runtime task. The socket is blocking (it
/// belongs to the listener thread), so the send is `MSG_DONTWAIT` and a
/// full buffer is retried after a sleep rather than blocking a worker.
/// As in [`send_all`], a reply too big for the interface goes again as
/// TC=1.
async fn send_reply(sock: &UdpSocket, out: &mut Vec<u8>, peer: SocketAddr) {
    let to = SockAddr::from(peer);
    let mut truncated = false;
    for _ in 0..SEND_TRIES {
        match SockRef::from(sock).send_to_with_flags(out, &to, libc::MSG_DONTWAIT) {
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                tokio::time::sleep(Duration::from_millis(1)).await
            }
            Err(e) if too_big(&e) && !truncated => {
                truncate_reply(out);
                truncated = true;
            }
            _ => return,
        }
    }
}

/// `recvmmsg(2)` / `sendmmsg(2)` over preallocated buffers, and the one
/// socket option socket2 has no call for (`IP_MTU_DISCOVER`). The only
/// unsafe code of the listeners: raw pointers into buffers this module owns,
/// handed to the kernel for the duration of one call.
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

        /// Waits for a datagram (up to the socket's receive timeout), then
        /// takes what else is queued, up to a batch; returns how many.
        pub(super) fn recv_wait(&mut self, fd: RawFd) -> io::Result<usize> {
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
                    libc::MSG_WAITFORONE,
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

    /// Sets IP_MTU_DISCOVER to IP_PMTUDISC_PROBE on an IPv4 socket: DF on
    /// every datagram, the path MTU ignored.
    pub(super) fn set_dont_fragment(fd: RawFd) -> io::Result<()> {
        let v: libc::c_int = libc::IP_PMTUDISC_PROBE;
        // SAFETY: `v` outlives the call, and its size is what we pass.
        let r = unsafe {
            libc::setsockopt(
                fd,
                libc::IPPROTO_IP,
                libc::IP_MTU_DISCOVER,
                (&v as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Reusable headers for one `sendmmsg`, so sending allocates nothing.
    pub(super) struct SendBatch {
        addrs: Vec<SockAddr>,
        iovs: Vec<libc::iovec>,
        hdrs: Vec<libc::mmsghdr>,
    }

    impl SendBatch {
        pub(super) fn new(n: usize) -> SendBatch {
            SendBatch {
                addrs: Vec::with_capacity(n),
                iovs: Vec::with_capacity(n),
                hdrs: Vec::with_capacity(n),
            }
        }

        /// Sends each reply to its peer with one `sendmmsg`, waiting for
        /// room up to the socket's send timeout; returns how many the
        /// kernel took (the rest are the caller's to retry or drop).
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
            let sent = unsafe { libc::sendmmsg(fd, self.hdrs.as_mut_ptr(), n as libc::c_uint, 0) };
            if sent < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(sent as usize)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::bind;
    use std::os::fd::AsRawFd;

    fn mtu_discover(fd: i32) -> libc::c_int {
        let mut v: libc::c_int = -1;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `v` and `len` outlive the call and describe `v`.
        let r = unsafe {
            libc::getsockopt(
                fd,
                libc::IPPROTO_IP,
                libc::IP_MTU_DISCOVER,
                (&mut v as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
        v
    }

    #[test]
    fn ipv4_replies_are_sent_unfragmentable_whatever_the_path_mtu() {
        let sock = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        assert_eq!(mtu_discover(sock.as_raw_fd()), libc::IP_PMTUDISC_PROBE);
    }
}
