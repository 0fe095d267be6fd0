//! One exchange with one upstream server: UDP first, TCP when the reply is
//! truncated (RFC 7766 §5), EDNS0 with a fallback for servers that reject
//! it (RFC 6891 §7).
//!
//! Forgery resistance (RFC 5452 §9.2): every query gets a random ID and a
//! fresh socket on a kernel-chosen random port, connected to the server so
//! the kernel drops datagrams from any other address or port; a reply is
//! accepted only if its ID and question (name, type, class) match too.
//! Anything else is ignored and we keep waiting until the timeout.
//!
//! 0x20 (draft-vixie-dnsext-dns0x20, Unbound's `use-caps-for-id`): the
//! letters of the query name get random case, and the reply's question
//! must echo it byte for byte, adding about a bit per letter to what a
//! forger must guess. A server that answers with the case changed is
//! remembered and asked without randomisation from then on.
//!
//! Replies to the iterator's own questions are decoded lean
//! (`resolve::decode`): the NS set and glue appended to an answer are
//! stepped over, not decoded.
//!
//! DNS Cookies, client side (RFC 7873 §5.3, RFC 9018 §3): every EDNS query
//! carries our client cookie for that server (a keyed hash of its address)
//! and the server cookie it last gave us; a reply whose COOKIE option does
//! not echo our client cookie is a forgery and ignored; BADCOOKIE is
//! retried once with the fresh server cookie.

use crate::handler::Transport;
use hickory_proto::op::{Message, MessageType, Query, ResponseCode};
use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
use hickory_proto::rr::{DNSClass, Name, RecordType};
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
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
    /// The reply matched but for the case of the question name: the
    /// server does not preserve it (0x20 cannot be used with it).
    #[error("question case not preserved")]
    CaseMismatch,
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
    /// Randomise the case of query names (0x20).
    pub case_randomisation: bool,
    /// Send DNS Cookies to servers and check the ones they return.
    pub cookies: bool,
    /// Set DO (RFC 3225) so servers send RRSIG, NSEC and NSEC3 records.
    pub dnssec_ok: bool,
}

/// Sends queries upstream.
pub struct Upstream {
    cfg: UpstreamConfig,
    /// Servers that answered FORMERR/NOTIMP to an EDNS query; they are
    /// asked without OPT from then on.
    no_edns: Mutex<HashSet<IpAddr, ahash::RandomState>>,
    /// Servers that did not echo the question's case; asked without 0x20.
    no_caps: Mutex<HashSet<IpAddr, ahash::RandomState>>,
    /// Key for our client cookies.
    cookie_secret: [u8; 16],
    /// The server cookie each server last gave us.
    /// (These per-server maps use ahash: they are read for every
    /// exchange.)
    server_cookies: Mutex<HashMap<IpAddr, Vec<u8>, ahash::RandomState>>,
    /// The dnstap writer, when `[dnstap] resolver` logs upstream traffic.
    tap: arc_swap::ArcSwapOption<crate::dnstap::Dnstap>,
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
    /// Whether it came over TCP after a truncated UDP reply.
    pub tcp: bool,
}

impl Upstream {
    /// A new transport.
    pub fn new(cfg: UpstreamConfig) -> Upstream {
        Upstream {
            cfg,
            no_edns: Mutex::new(HashSet::default()),
            no_caps: Mutex::new(HashSet::default()),
            cookie_secret: rand::random(),
            server_cookies: Mutex::new(HashMap::default()),
            ipv6_route: has_ipv6_route(),
            tap: arc_swap::ArcSwapOption::empty(),
        }
    }

    /// Starts or stops dnstap logging of upstream queries and replies.
    pub fn set_dnstap(&self, tap: Option<std::sync::Arc<crate::dnstap::Dnstap>>) {
        self.tap.store(tap.filter(|t| t.logs_resolver()));
    }

    /// Logs a query about to go to `addr` (dnstap RESOLVER_QUERY).
    fn tap_query(&self, query: &[u8], addr: SocketAddr, t: Transport) {
        if let Some(tap) = self.tap.load().as_deref() {
            tap.resolver_query(query, addr, t);
        }
    }

    /// Logs a reply from `addr` (dnstap RESOLVER_RESPONSE), re-encoded:
    /// the transport hands over the decoded message.
    fn tap_reply(&self, reply: &Message, addr: SocketAddr, t: Transport) {
        if let Some(tap) = self.tap.load().as_deref() {
            use hickory_proto::serialize::binary::BinEncodable;
            if let Ok(wire) = reply.to_bytes() {
                tap.resolver_response(&wire, addr, t);
            }
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
        self.exchange_at(addr, qname, qtype, timeout, false).await
    }

    /// As [`Upstream::exchange`], to a given port, with RD set when `rd`
    /// (queries to forwarders, which resolve for us). No address policy:
    /// the operator named the server (a forwarder on loopback is common).
    pub async fn exchange_at(
        &self,
        addr: SocketAddr,
        qname: &Name,
        qtype: RecordType,
        timeout: Duration,
        rd: bool,
    ) -> Result<Reply, ExchangeError> {
        let server = addr.ip();
        let listed = |set: &Mutex<HashSet<IpAddr, ahash::RandomState>>| {
            set.lock().map(|s| s.contains(&server)).unwrap_or(false)
        };
        let remember = |set: &Mutex<HashSet<IpAddr, ahash::RandomState>>| {
            if let Ok(mut s) = set.lock() {
                s.insert(server);
            }
        };
        let mut edns = !listed(&self.no_edns);
        let mut caps = self.cfg.case_randomisation && !listed(&self.no_caps);
        let started = Instant::now();
        // At most one fallback of each kind: without 0x20, without EDNS,
        // with a renewed server cookie.
        let mut cookie_retried = false;
        for _ in 0..4 {
            let cookie = (edns && self.cfg.cookies).then(|| self.cookie_for(server));
            let query = self.build(qname, qtype, edns, caps, cookie.as_deref(), rd);
            self.tap_query(&query.bytes, addr, Transport::Udp);
            let reply = match self.udp(addr, &query, timeout).await {
                Err(ExchangeError::CaseMismatch) if caps => {
                    tracing::debug!(%server, "no 0x20: the server changed the question's case");
                    remember(&self.no_caps);
                    caps = false;
                    continue;
                }
                other => other?,
            };
            self.tap_reply(&reply, addr, Transport::Udp);
            let rc = reply.metadata.response_code;
            if edns
                && (rc == ResponseCode::FormErr || rc == ResponseCode::NotImp)
                && reply.edns.is_none()
            {
                remember(&self.no_edns);
                edns = false;
                continue;
            }
            if cookie.is_some() {
                self.learn_cookie(server, &reply);
                if u16::from(rc) == BADCOOKIE && !cookie_retried {
                    cookie_retried = true;
                    continue;
                }
            }
            let rtt = started.elapsed();
            if reply.metadata.truncation {
                let query = self.build(qname, qtype, edns, caps, cookie.as_deref(), rd);
                self.tap_query(&query.bytes, addr, Transport::Tcp);
                let msg = self.tcp(addr, &query, timeout).await?;
                self.tap_reply(&msg, addr, Transport::Tcp);
                return Ok(Reply {
                    msg,
                    rtt,
                    tcp: true,
                });
            }
            return Ok(Reply {
                msg: reply,
                rtt,
                tcp: false,
            });
        }
        Err(ExchangeError::BadReply)
    }

    /// The COOKIE option data for `server`: our client cookie (RFC 9018
    /// §3: a keyed hash of the server's address, so servers cannot link
    /// our queries to each other), then its last server cookie.
    fn cookie_for(&self, server: IpAddr) -> Vec<u8> {
        let addr: Vec<u8> = match server {
            IpAddr::V4(a) => a.octets().to_vec(),
            IpAddr::V6(a) => a.octets().to_vec(),
        };
        let client = siphasher::sip::SipHasher24::new_with_key(&self.cookie_secret)
            .hash(&addr)
            .to_le_bytes();
        let mut data = client.to_vec();
        if let Ok(m) = self.server_cookies.lock() {
            data.extend(m.get(&server).into_iter().flatten());
        }
        data
    }

    /// Keeps the server cookie of a reply (already checked to echo our
    /// client cookie in [`accept`]).
    fn learn_cookie(&self, server: IpAddr, reply: &Message) {
        if let Some(server_cookie) = reply_cookie(reply).and_then(|c| c.get(8..)) {
            if (8..=32).contains(&server_cookie.len()) {
                if let Ok(mut m) = self.server_cookies.lock() {
                    m.insert(server, server_cookie.to_vec());
                }
            }
        }
    }

    /// The query in wire form, written directly (RFC 1035 §4.1, RFC 6891
    /// §6.1.2 for the OPT record): no message object to build and encode.
    fn build(
        &self,
        qname: &Name,
        qtype: RecordType,
        edns: bool,
        caps: bool,
        cookie: Option<&[u8]>,
        rd: bool,
    ) -> Sent {
        let id: u16 = rand::random();
        let mut bytes = Vec::with_capacity(12 + 256 + 4 + 11);
        bytes.extend_from_slice(&id.to_be_bytes());
        // A standard query; RD=0 when we iterate ourselves, RD=1 only to
        // forwarders.
        bytes.extend_from_slice(&[u8::from(rd), 0, 0, 1, 0, 0, 0, 0, 0, u8::from(edns)]);
        for label in qname.iter() {
            bytes.push(label.len() as u8);
            bytes.extend_from_slice(label);
        }
        bytes.push(0);
        let name_len = bytes.len() - HEADER_LEN;
        let plain_name = caps.then(|| bytes[HEADER_LEN..].to_vec());
        if caps {
            randomise_case(&mut bytes[HEADER_LEN..]);
        }
        bytes.extend_from_slice(&u16::from(qtype).to_be_bytes());
        bytes.extend_from_slice(&u16::from(DNSClass::IN).to_be_bytes());
        if edns {
            // Owner root, type OPT, class = our payload size, extended
            // RCODE 0, version 0, DO when validating; the COOKIE option
            // if any.
            bytes.extend_from_slice(&[0, 0, 41]);
            bytes.extend_from_slice(&self.cfg.edns_payload.to_be_bytes());
            let flags = if self.cfg.dnssec_ok { 0x80 } else { 0 };
            bytes.extend_from_slice(&[0, 0, flags, 0]);
            let c = cookie.unwrap_or(&[]);
            let rdlen = if c.is_empty() { 0 } else { 4 + c.len() as u16 };
            bytes.extend_from_slice(&rdlen.to_be_bytes());
            if !c.is_empty() {
                bytes.extend_from_slice(&10u16.to_be_bytes());
                bytes.extend_from_slice(&(c.len() as u16).to_be_bytes());
                bytes.extend_from_slice(c);
            }
        }
        Sent {
            id,
            bytes,
            name_len,
            plain_name,
            client_cookie: cookie
                .and_then(|c| c.get(..8))
                .and_then(|c| c.try_into().ok()),
            // Not for forwarders (rd), whose whole reply may be passed on;
            // not for NS questions (priming reads the glue); not while
            // dnstap logs replies (it re-encodes the message).
            lean: (!rd && qtype != RecordType::NS && self.tap.load().is_none())
                .then(|| Query::query(qname.clone(), qtype)),
        }
    }

    async fn udp(
        &self,
        addr: SocketAddr,
        query: &Sent,
        timeout: Duration,
    ) -> Result<Message, ExchangeError> {
        let sock = connected_socket(addr).map_err(ExchangeError::Unreachable)?;
        // A fresh socket's send buffer is empty: a datagram never waits.
        sock.send(&query.bytes)
            .map_err(ExchangeError::Unreachable)?;
        let deadline = Instant::now() + timeout;
        // Large enough for anything we invited (our EDNS size); a larger
        // datagram is truncated by the kernel, fails to parse and is ignored.
        let size = (self.cfg.edns_payload as usize).max(512) + 1;
        // Let the runtime run what else is ready first, then look for the
        // reply before asking the reactor to watch the socket. Under load
        // it is usually in by then: no epoll_ctl to add the socket and to
        // remove it, and no timer (with its eventfd wake-up, at times).
        // When it is not, one `recv` more is the cost.
        tokio::task::yield_now().await;
        for _ in 0..EARLY_READS {
            match recv_matching(&sock, size, query) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(ExchangeError::Unreachable(e)),
                Ok(Ok(m)) => return Ok(m),
                Ok(Err(Mismatch::Case)) => return Err(ExchangeError::CaseMismatch),
                Ok(Err(Mismatch::Other)) => {}
            }
        }
        // Registered after the reads above: a datagram that came in
        // between is reported at once, as the socket is readable.
        // SAFETY: the AsyncFd owns the socket, whose descriptor stays open
        // and the same until the AsyncFd drops it.
        let sock = unsafe { AsyncFd::register_with_interest(sock, Interest::READABLE) }
            .map_err(|e| ExchangeError::Unreachable(e.into_parts().1))?;
        let wait = async {
            loop {
                // ERROR too: an ICMP error on a connected socket raises
                // EPOLLERR alone, and the recv below returns it.
                let mut ready = sock
                    .ready(Interest::READABLE | Interest::ERROR)
                    .await
                    .map_err(ExchangeError::Unreachable)?;
                match ready.try_io(|s| recv_matching(s.get_ref(), size, query)) {
                    Err(_would_block) => continue,
                    Ok(Err(e)) => return Err(ExchangeError::Unreachable(e)),
                    Ok(Ok(Ok(m))) => return Ok(m),
                    Ok(Ok(Err(Mismatch::Case))) => return Err(ExchangeError::CaseMismatch),
                    Ok(Ok(Err(Mismatch::Other))) => {}
                }
            }
        };
        match tokio::time::timeout_at(deadline, wait).await {
            Err(_) => Err(ExchangeError::Timeout),
            Ok(r) => r,
        }
    }

    async fn tcp(
        &self,
        addr: SocketAddr,
        query: &Sent,
        timeout: Duration,
    ) -> Result<Message, ExchangeError> {
        let deadline = Instant::now() + timeout * 2;
        let mut s = match tokio::time::timeout_at(deadline, TcpStream::connect(addr)).await {
            Err(_) => return Err(ExchangeError::Timeout),
            Ok(Err(e)) => return Err(ExchangeError::Unreachable(e)),
            Ok(Ok(s)) => s,
        };
        let mut framed = Vec::with_capacity(query.bytes.len() + 2);
        framed.extend_from_slice(&(query.bytes.len() as u16).to_be_bytes());
        framed.extend_from_slice(&query.bytes);
        let io = async {
            s.write_all(&framed).await?;
            loop {
                let n = s.read_u16().await? as usize;
                let mut buf = vec![0u8; n];
                s.read_exact(&mut buf).await?;
                // A TCP peer is the server itself (no off-path forger gets
                // a connection's sequence numbers right), so a case
                // mismatch here only means a careless server.
                if let Ok(m) = accept(&mut buf, query) {
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

impl Upstream {
    /// One exchange over DNS over TLS (RFC 7858) through `client`, which
    /// keeps the connection open and pipelines. No 0x20 and no cookies:
    /// the TLS session already authenticates the server.
    pub async fn exchange_dot(
        &self,
        client: &crate::transport::dot_client::DotClient,
        qname: &Name,
        qtype: RecordType,
        timeout: Duration,
        rd: bool,
    ) -> Result<Reply, ExchangeError> {
        let started = Instant::now();
        let query = self.build(qname, qtype, true, false, None, rd);
        let addr = client.server();
        self.tap_query(&query.bytes, addr, Transport::Dot);
        let mut reply = match tokio::time::timeout(timeout, client.exchange(&query.bytes)).await {
            Err(_) | Ok(Err(crate::transport::dot_client::DotError::Timeout)) => {
                return Err(ExchangeError::Timeout)
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "DoT exchange failed");
                return Err(ExchangeError::Unreachable(std::io::Error::other(
                    e.to_string(),
                )));
            }
            Ok(Ok(r)) => r,
        };
        let msg = accept(&mut reply, &query).map_err(|_| ExchangeError::BadReply)?;
        self.tap_reply(&msg, addr, Transport::Dot);
        Ok(Reply {
            msg,
            rtt: started.elapsed(),
            tcp: false,
        })
    }

    /// For `crate::fuzz`: matches `reply` against our query for `qname`/
    /// `qtype` as [`Upstream::exchange`] would: its ID taken from the reply
    /// (so the fuzzer gets past the ID check), the byte-for-byte question
    /// check of 0x20 when `caps`, and a cookie whose client part is 8 zero
    /// bytes.
    pub(crate) fn accept_for_fuzzing(
        &self,
        qname: &Name,
        qtype: RecordType,
        caps: bool,
        reply: &mut [u8],
    ) -> Option<Message> {
        let mut query = self.build(qname, qtype, true, false, Some(&[0; 8]), false);
        query.id = u16::from_be_bytes([*reply.first()?, *reply.get(1)?]);
        if caps {
            let plain = query
                .bytes
                .get(HEADER_LEN..HEADER_LEN + query.name_len)?
                .to_vec();
            query.plain_name = Some(plain.to_ascii_lowercase());
        }
        accept(reply, &query).ok()
    }
}

/// Length of the DNS header; the question name follows it.
pub(super) const HEADER_LEN: usize = 12;

/// A query as sent, for matching its reply.
struct Sent {
    id: u16,
    bytes: Vec<u8>,
    /// Length of the question name in wire form.
    name_len: usize,
    /// With 0x20: the name as asked, before its case was randomised.
    plain_name: Option<Vec<u8>>,
    /// The client cookie sent, which a reply's COOKIE must echo.
    client_cookie: Option<[u8; 8]>,
    /// The question as asked, when the reply is decoded with
    /// [`super::decode::lean`].
    lean: Option<Query>,
}

/// Extended RCODE BADCOOKIE (RFC 7873 §8).
const BADCOOKIE: u16 = 23;

/// The COOKIE option data of a message, if it has one.
fn reply_cookie(m: &Message) -> Option<&[u8]> {
    match m.edns.as_ref()?.option(EdnsCode::Cookie)? {
        EdnsOption::Unknown(10, data) => Some(data),
        _ => None,
    }
}

/// Flips the case of each letter of a wire-form name at random (length
/// octets are below 64, never letters, so they are left alone).
fn randomise_case(name: &mut [u8]) {
    let mut bits: u64 = rand::random();
    let mut left = 64;
    for b in name.iter_mut().filter(|b| b.is_ascii_alphabetic()) {
        if left == 0 {
            bits = rand::random();
            left = 64;
        }
        if bits & 1 == 1 {
            *b ^= 0x20;
        }
        bits >>= 1;
        left -= 1;
    }
}

/// Why a datagram is not the reply to our query.
enum Mismatch {
    /// The question's letters differ in case only (see [`Sent`]).
    Case,
    /// Anything else: wrong ID, not a response, another question.
    Other,
}

/// The reply matches our query: a response, same ID, same question (the
/// name byte for byte when its case was randomised). The question name in
/// `buf` is then given back the case it was asked with, so names that the
/// reply compresses against it decode as asked, not as randomised.
fn accept(buf: &mut [u8], query: &Sent) -> Result<Message, Mismatch> {
    let header = buf.get(..HEADER_LEN).ok_or(Mismatch::Other)?;
    let id = u16::from_be_bytes([header[0], header[1]]);
    let qdcount = u16::from_be_bytes([header[4], header[5]]);
    if id != query.id || header[2] & 0x80 == 0 {
        return Err(Mismatch::Other);
    }
    if qdcount == 0 {
        // FORMERR/NOTIMP replies may legitimately omit the question.
        let m = Message::from_vec(buf).map_err(|_| Mismatch::Other)?;
        return match m.metadata.response_code {
            ResponseCode::FormErr | ResponseCode::NotImp => Ok(m),
            _ => Err(Mismatch::Other),
        };
    }
    let end = HEADER_LEN + query.name_len;
    // Name, then QTYPE and QCLASS (compared exactly: they are numbers).
    let (sent, sent_tc) = query
        .bytes
        .get(HEADER_LEN..end + 4)
        .ok_or(Mismatch::Other)?
        .split_at(query.name_len);
    let (got, got_tc) = buf
        .get(HEADER_LEN..end + 4)
        .ok_or(Mismatch::Other)?
        .split_at(query.name_len);
    if qdcount != 1 || got_tc != sent_tc || !got.eq_ignore_ascii_case(sent) {
        return Err(Mismatch::Other);
    }
    if let Some(plain) = &query.plain_name {
        if got != sent {
            return Err(Mismatch::Case);
        }
        if let Some(name) = buf.get_mut(HEADER_LEN..end) {
            name.copy_from_slice(plain);
        }
    }
    let m = if let Some(asked) = &query.lean {
        super::decode::lean(buf, asked)
    } else {
        Message::from_vec(buf)
    }
    .map_err(|_| Mismatch::Other)?;
    if m.metadata.message_type != MessageType::Response {
        return Err(Mismatch::Other);
    }
    // RFC 7873 §5.3: a COOKIE that does not echo ours is not our reply. A
    // reply without one is taken (the server may not do cookies).
    if let (Some(sent), Some(got)) = (query.client_cookie, reply_cookie(&m)) {
        if got.get(..8) != Some(&sent[..]) {
            return Err(Mismatch::Other);
        }
    }
    Ok(m)
}

/// A non-blocking UDP socket connected to `addr`. `connect` binds it to a
/// random ephemeral port chosen by the kernel (RFC 5452 §9.2), so no
/// separate `bind` call is needed, and the kernel drops datagrams from any
/// other address or port. Registered for reading only: tokio's
/// `UdpSocket` also asks for EPOLLOUT, an event per exchange that nothing
/// waits for.
fn connected_socket(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let domain = socket2::Domain::for_address(addr);
    let sock = socket2::Socket::new(
        domain,
        socket2::Type::DGRAM.nonblocking(),
        Some(socket2::Protocol::UDP),
    )?;
    sock.connect(&addr.into())?;
    Ok(sock.into())
}

/// How many datagrams an exchange reads before it registers its socket
/// with the reactor: a reply and a few forgeries. More than that and the
/// rest wait for the registered loop, where the deadline bounds them.
const EARLY_READS: usize = 4;

/// Receives one datagram (WouldBlock when none is queued) and matches it
/// against the query, in this thread's buffer: no allocation per exchange.
fn recv_matching(
    sock: &std::net::UdpSocket,
    size: usize,
    query: &Sent,
) -> std::io::Result<Result<Message, Mismatch>> {
    RECV_BUF.with_borrow_mut(|buf| {
        buf.resize(size, 0);
        let n = sock.recv(buf)?;
        let datagram = buf.get_mut(..n).unwrap_or_default();
        Ok(accept(datagram, query))
    })
}

thread_local! {
    /// Where replies are received and decoded, one per runtime thread.
    static RECV_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Connecting a UDP socket sends nothing but consults the routing table:
/// it fails with ENETUNREACH when there is no IPv6 route (RFC 3849 address).
fn has_ipv6_route() -> bool {
    std::net::UdpSocket::bind((std::net::Ipv6Addr::UNSPECIFIED, 0))
        .and_then(|s| s.connect(("2001:db8::1", 53)))
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream() -> Upstream {
        Upstream::new(UpstreamConfig {
            port: 53,
            edns_payload: 1232,
            query_loopback: true,
            case_randomisation: true,
            cookies: false,
            dnssec_ok: false,
        })
    }

    /// The query turned into a reply: QR set, the question as sent.
    fn reply_to(query: &[u8], id: u16) -> Vec<u8> {
        let mut r = query.to_vec();
        r[..2].copy_from_slice(&id.to_be_bytes());
        r[2] |= 0x80;
        r
    }

    /// What an exchange reads before registering its socket: a forgery
    /// queued ahead of the reply is read and passed over, the reply is
    /// taken, and an empty socket says WouldBlock (the exchange then
    /// registers and waits).
    #[test]
    fn early_reads_skip_a_forgery_and_take_the_queued_reply() {
        let up = upstream();
        let server = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let name = Name::from_ascii("www.example.test.").unwrap();
        let query = up.build(&name, RecordType::A, false, true, None, false);
        let client = connected_socket(server.local_addr().unwrap()).unwrap();
        client.send(&query.bytes).unwrap();
        let mut buf = [0u8; 512];
        let (n, from) = server.recv_from(&mut buf).unwrap();
        let asked = &buf[..n];
        server
            .send_to(&reply_to(asked, query.id.wrapping_add(1)), from)
            .unwrap();
        server.send_to(&reply_to(asked, query.id), from).unwrap();
        // Loopback delivery is synchronous, but give a slow machine room.
        std::thread::sleep(Duration::from_millis(50));
        let size = 1233;
        assert!(matches!(
            recv_matching(&client, size, &query),
            Ok(Err(Mismatch::Other))
        ));
        let m = recv_matching(&client, size, &query)
            .unwrap()
            .map_err(|_| "mismatch")
            .unwrap();
        assert_eq!(m.metadata.id, query.id);
        let e = recv_matching(&client, size, &query)
            .map(|_| ())
            .unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock);
    }

    /// A server that answers only after the exchange has registered its
    /// socket (50 ms on) is still heard, and one that never answers times
    /// out at the deadline.
    #[tokio::test]
    async fn a_late_reply_is_heard_and_none_times_out() {
        let up = upstream();
        let server = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = server.local_addr().unwrap();
        let name = Name::from_ascii("late.example.test.").unwrap();
        let query = up.build(&name, RecordType::A, false, true, None, false);
        let answerer = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            let (n, from) = server.recv_from(&mut buf).unwrap();
            std::thread::sleep(Duration::from_millis(50));
            let mut r = buf[..n].to_vec();
            r[2] |= 0x80;
            server.send_to(&r, from).unwrap();
            server
        });
        let m = up
            .udp(addr, &query, Duration::from_secs(2))
            .await
            .map_err(|e| e.to_string())
            .unwrap();
        assert_eq!(m.metadata.id, query.id);
        let _silent = answerer.join().unwrap();
        let started = Instant::now();
        let query = up.build(&name, RecordType::A, false, true, None, false);
        let r = up.udp(addr, &query, Duration::from_millis(100)).await;
        assert!(matches!(r, Err(ExchangeError::Timeout)));
        assert!(started.elapsed() >= Duration::from_millis(100));
    }
}
