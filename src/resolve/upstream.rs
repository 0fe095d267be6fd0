//! One exchange with one upstream server: UDP first, TCP when the reply is
//! truncated (RFC 7766 §5), EDNS0 with a fallback for servers that reject
//! it (RFC 6891 §7).
//!
//! Forgery resistance (RFC 5452 §9.2): every query gets a random ID and a
//! fresh socket on a kernel-chosen random port, connected to the server so
//! the kernel drops datagrams from any other address or port; a reply is
//! accepted only if its ID and question (name, type, class) match too.
//! Anything else is ignored and we keep waiting until the timeout.

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RecordType};
use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::Instant;

/// Why an exchange produced no usable reply.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// Nothing acceptable arrived in time.
    #[error("timeout")]
    Timeout,
    /// The server cannot be reached (ICMP error, no route, refused TCP).
    #[error("unreachable: {0}")]
    Unreachable(std::io::Error),
    /// The address may not be queried (loopback without `query_loopback`).
    #[error("address not allowed")]
    Forbidden,
    /// A reply we could not use (undecodable over TCP).
    #[error("bad reply")]
    BadReply,
}

/// Upstream transport settings.
#[derive(Debug, Clone, Copy)]
pub struct UpstreamConfig {
    /// Destination port for every upstream query.
    pub port: u16,
    /// Our advertised EDNS buffer.
    pub edns_payload: u16,
    /// Allow 127.0.0.0/8 and ::1.
    pub query_loopback: bool,
}

/// Sends queries upstream.
pub struct Upstream {
    cfg: UpstreamConfig,
    /// Servers that answered FORMERR/NOTIMP to an EDNS query; they are
    /// asked without OPT from then on.
    no_edns: Mutex<HashSet<IpAddr>>,
    /// Whether this host has a route to the global IPv6 internet; without
    /// one, IPv6 server addresses are skipped instead of failing one by one.
    ipv6_route: bool,
}

/// How a reply came back.
#[derive(Debug)]
pub struct Reply {
    /// The decoded message.
    pub msg: Message,
    /// Round trip of the exchange that produced it.
    pub rtt: Duration,
}

impl Upstream {
    /// A new transport.
    pub fn new(cfg: UpstreamConfig) -> Upstream {
        Upstream {
            cfg,
            no_edns: Mutex::new(HashSet::new()),
            ipv6_route: has_ipv6_route(),
        }
    }

    /// Whether `ip` may be queried at all.
    pub fn allowed(&self, ip: IpAddr) -> bool {
        if ip.is_unspecified() || ip.is_multicast() {
            return false;
        }
        if ip.is_loopback() {
            return self.cfg.query_loopback;
        }
        self.ipv6_route || ip.is_ipv4()
    }

    /// Asks `server` one question, waiting at most `timeout` per transport
    /// step.
    pub async fn exchange(
        &self,
        server: IpAddr,
        qname: &Name,
        qtype: RecordType,
        timeout: Duration,
    ) -> Result<Reply, ExchangeError> {
        if !self.allowed(server) {
            return Err(ExchangeError::Forbidden);
        }
        let addr = SocketAddr::new(server, self.cfg.port);
        let use_edns = !self
            .no_edns
            .lock()
            .map(|s| s.contains(&server))
            .unwrap_or(false);
        let started = Instant::now();
        let reply = self.udp(addr, qname, qtype, use_edns, timeout).await?;
        let rc = reply.response_code();
        if use_edns
            && (rc == ResponseCode::FormErr || rc == ResponseCode::NotImp)
            && reply.extensions().is_none()
        {
            if let Ok(mut s) = self.no_edns.lock() {
                s.insert(server);
            }
            let reply = self.udp(addr, qname, qtype, false, timeout).await?;
            return self
                .finish(addr, qname, qtype, false, timeout, reply, started)
                .await;
        }
        self.finish(addr, qname, qtype, use_edns, timeout, reply, started)
            .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn finish(
        &self,
        addr: SocketAddr,
        qname: &Name,
        qtype: RecordType,
        edns: bool,
        timeout: Duration,
        reply: Message,
        started: Instant,
    ) -> Result<Reply, ExchangeError> {
        let rtt = started.elapsed();
        if reply.truncated() {
            let msg = self.tcp(addr, qname, qtype, edns, timeout).await?;
            return Ok(Reply { msg, rtt });
        }
        Ok(Reply { msg: reply, rtt })
    }

    /// The query in wire form, written directly (RFC 1035 §4.1, RFC 6891
    /// §6.1.2 for the OPT record): no message object to build and encode.
    fn build(&self, qname: &Name, qtype: RecordType, edns: bool) -> (u16, Vec<u8>) {
        let id: u16 = rand::random();
        let mut out = Vec::with_capacity(12 + 256 + 4 + 11);
        out.extend_from_slice(&id.to_be_bytes());
        // Flags 0: a standard query with RD=0 (we iterate ourselves).
        out.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, u8::from(edns)]);
        for label in qname.iter() {
            out.push(label.len() as u8);
            out.extend_from_slice(label);
        }
        out.push(0);
        out.extend_from_slice(&u16::from(qtype).to_be_bytes());
        out.extend_from_slice(&u16::from(DNSClass::IN).to_be_bytes());
        if edns {
            // Owner root, type OPT, class = our payload size, extended
            // RCODE 0, version 0, no flags, no options.
            out.extend_from_slice(&[0, 0, 41]);
            out.extend_from_slice(&self.cfg.edns_payload.to_be_bytes());
            out.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        }
        (id, out)
    }

    async fn udp(
        &self,
        addr: SocketAddr,
        qname: &Name,
        qtype: RecordType,
        edns: bool,
        timeout: Duration,
    ) -> Result<Message, ExchangeError> {
        let sock = connected_socket(addr).map_err(ExchangeError::Unreachable)?;
        let (id, bytes) = self.build(qname, qtype, edns);
        sock.send(&bytes)
            .await
            .map_err(ExchangeError::Unreachable)?;
        let deadline = Instant::now() + timeout;
        // Large enough for anything we invited (our EDNS size); a larger
        // datagram is truncated by the kernel, fails to parse and is ignored.
        let mut buf = Vec::with_capacity((self.cfg.edns_payload as usize).max(512) + 1);
        loop {
            buf.clear();
            let n = match tokio::time::timeout_at(deadline, sock.recv_buf(&mut buf)).await {
                Err(_) => return Err(ExchangeError::Timeout),
                Ok(Err(e)) => return Err(ExchangeError::Unreachable(e)),
                Ok(Ok(n)) => n,
            };
            if let Some(m) = accept(buf.get(..n).unwrap_or(&[]), id, qname, qtype) {
                return Ok(m);
            }
        }
    }

    async fn tcp(
        &self,
        addr: SocketAddr,
        qname: &Name,
        qtype: RecordType,
        edns: bool,
        timeout: Duration,
    ) -> Result<Message, ExchangeError> {
        let deadline = Instant::now() + timeout * 2;
        let mut s = match tokio::time::timeout_at(deadline, TcpStream::connect(addr)).await {
            Err(_) => return Err(ExchangeError::Timeout),
            Ok(Err(e)) => return Err(ExchangeError::Unreachable(e)),
            Ok(Ok(s)) => s,
        };
        let (id, bytes) = self.build(qname, qtype, edns);
        let mut framed = Vec::with_capacity(bytes.len() + 2);
        framed.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
        framed.extend_from_slice(&bytes);
        let io = async {
            s.write_all(&framed).await?;
            loop {
                let n = s.read_u16().await? as usize;
                let mut buf = vec![0u8; n];
                s.read_exact(&mut buf).await?;
                if let Some(m) = accept(&buf, id, qname, qtype) {
                    return Ok::<_, std::io::Error>(m);
                }
            }
        };
        match tokio::time::timeout_at(deadline, io).await {
            Err(_) => Err(ExchangeError::Timeout),
            Ok(Err(_)) => Err(ExchangeError::BadReply),
            Ok(Ok(m)) => Ok(m),
        }
    }
}

/// A non-blocking UDP socket connected to `addr`. `connect` binds it to a
/// random ephemeral port chosen by the kernel (RFC 5452 §9.2), so no
/// separate `bind` call is needed, and the kernel drops datagrams from any
/// other address or port.
fn connected_socket(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let domain = socket2::Domain::for_address(addr);
    let sock = socket2::Socket::new(
        domain,
        socket2::Type::DGRAM.nonblocking(),
        Some(socket2::Protocol::UDP),
    )?;
    sock.connect(&addr.into())?;
    UdpSocket::from_std(sock.into())
}

/// Connecting a UDP socket sends nothing but consults the routing table:
/// it fails with ENETUNREACH when there is no IPv6 route (RFC 3849 address).
fn has_ipv6_route() -> bool {
    std::net::UdpSocket::bind((std::net::Ipv6Addr::UNSPECIFIED, 0))
        .and_then(|s| s.connect(("2001:db8::1", 53)))
        .is_ok()
}

/// The reply matches our query: a response, same ID, same question.
fn accept(bytes: &[u8], id: u16, qname: &Name, qtype: RecordType) -> Option<Message> {
    let m = Message::from_vec(bytes).ok()?;
    if m.id() != id || m.message_type() != MessageType::Response {
        return None;
    }
    // FORMERR/NOTIMP replies may legitimately omit the question.
    if m.queries().is_empty()
        && matches!(
            m.response_code(),
            ResponseCode::FormErr | ResponseCode::NotImp
        )
    {
        return Some(m);
    }
    let q = m.queries().first()?;
    (m.queries().len() == 1
        && q.name() == qname
        && q.query_type() == qtype
        && q.query_class() == DNSClass::IN)
        .then_some(m)
}
