//! The floor for a UDP cache hit: a responder that does no DNS work. It
//! answers every query with the same A record, reading up to 32 queries
//! per blocking `recvmmsg` and sending the replies with one `sendmmsg`,
//! on one socket and one thread, with DF set as resolvd sets it. What
//! resolvd costs above this is what its cache hit costs beyond the
//! kernel's loopback path (issue 14).
//!
//!     cargo build --release --example canned_responder
//!     target/release/examples/canned_responder 127.0.0.1:53540
//!
//! Used by `benches/dnsperf.sh`; not a DNS server (no parsing, no checks).

use std::net::UdpSocket;
use std::os::fd::AsRawFd;

const BATCH: usize = 32;
const BUF: usize = 512;
/// The answer appended to each query: a pointer to the question name,
/// type A, class IN, TTL 60, 192.0.2.1.
const ANSWER: [u8; 16] = [0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1];

fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:53540".into());
    let sock = UdpSocket::bind(&addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    let fd = sock.as_raw_fd();
    // The same DF setting as resolvd's UDP sockets (src/listener/udp.rs),
    // so the floor's kernel path is the one resolvd's replies take.
    let probe: libc::c_int = libc::IP_PMTUDISC_PROBE;
    // SAFETY: `probe` outlives the call and its size is what is passed.
    let set = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            (&probe as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(
        set,
        0,
        "IP_MTU_DISCOVER: {}",
        std::io::Error::last_os_error()
    );
    let mut bufs = vec![[0u8; BUF + ANSWER.len()]; BATCH];
    // SAFETY (all zeroed structs): valid initial values for these C types.
    let mut addrs: Vec<libc::sockaddr_storage> = vec![unsafe { std::mem::zeroed() }; BATCH];
    let mut iovs: Vec<libc::iovec> = bufs
        .iter_mut()
        .map(|b| libc::iovec {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: BUF,
        })
        .collect();
    let mut hdrs: Vec<libc::mmsghdr> = (0..BATCH)
        .map(|i| {
            let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
            h.msg_hdr.msg_iov = &mut iovs[i];
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_name = (&mut addrs[i] as *mut libc::sockaddr_storage).cast();
            h
        })
        .collect();
    loop {
        for (h, iov) in hdrs.iter_mut().zip(iovs.iter_mut()) {
            h.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as u32;
            iov.iov_len = BUF;
        }
        // SAFETY: every header points at live buffers of the stated sizes.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                hdrs.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n <= 0 {
            continue;
        }
        let n = n as usize;
        for i in 0..n {
            let len = hdrs[i].msg_len as usize;
            let b = &mut bufs[i];
            if len < 12 {
                iovs[i].iov_len = 0;
                continue;
            }
            // The question ends after its name (labels up to a 0) and
            // type and class; anything after it (an OPT) is dropped.
            let mut pos = 12;
            while pos < len && b[pos] != 0 && b[pos] < 64 {
                pos += b[pos] as usize + 1;
            }
            let qend = pos + 5;
            if qend > len {
                iovs[i].iov_len = 0;
                continue;
            }
            b[2] |= 0x80; // QR
            b[3] |= 0x80; // RA
            b[6] = 0;
            b[7] = 1; // ANCOUNT 1
            b[8..12].fill(0);
            b[qend..qend + ANSWER.len()].copy_from_slice(&ANSWER);
            iovs[i].iov_len = qend + ANSWER.len();
        }
        // SAFETY: as above; msg_name still holds each sender's address.
        unsafe { libc::sendmmsg(fd, hdrs.as_mut_ptr(), n as u32, 0) };
    }
}
