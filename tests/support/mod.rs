//! Simulated DNS hierarchy for integration tests.
//!
//! `Sim::start` runs in-process authoritative servers (UDP + TCP) on tokio,
//! each on its own 127.x.y.z address and all on one shared port, serving
//! zones given as master-file text, and writes a named.root-style hints file
//! pointing at the servers marked `root`. Each server can be told to misbehave
//! (`Faults`) and records every query it sees, so tests can assert both on
//! the resolver's answers and on what it asked upstream.
//!
//! Followed: RFC 1034/1035 (authoritative answers, referrals with glue, zone
//! files), RFC 2308 (negative answers with SOA, TTL = min(SOA TTL, MINIMUM)),
//! RFC 4592 (wildcards), RFC 6672 (DNAME), RFC 6891 (EDNS(0); UDP reply size
//! limit, TC=1 with empty sections when exceeded), RFC 7766 (TCP framing,
//! several queries per connection), RFC 8020 (empty non-terminals are NODATA),
//! RFC 3597 (`\# len hex` for record types the zone reader doesn't know).
//!
//! Everything binds and talks to 127.0.0.0/8 only; every wait has a timeout.
#![allow(dead_code)]

pub mod dot;
pub mod fixed;
pub mod pki;
mod server;
pub mod under_test;
mod zone;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};
use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinHandle;

#[allow(unused_imports)]
pub use server::{AuthServer, Faults, SeenQuery, SIM_SERVER_COOKIE};
#[allow(unused_imports)]
pub use zone::Zone;

use server::{lock, State};

/// Describes one simulated authoritative server.
#[derive(Clone, Debug)]
pub struct ServerSpec {
    /// NS host name, e.g. "a.root-servers.test." (used in root hints).
    pub name: String,
    /// Loopback address, e.g. 127.1.0.1.
    pub addr: IpAddr,
    /// Zone-file texts; origin = SOA owner, else the first `$ORIGIN`.
    pub zones: Vec<String>,
    /// Listed in the generated root hints.
    pub root: bool,
    /// Absolute zone-file lines appended to the additional section of every
    /// zone-derived reply (for cache-poisoning tests).
    pub extra_additional: Vec<String>,
}

impl ServerSpec {
    pub fn new(name: &str, addr: &str, zones: &[&str]) -> Self {
        let addr: IpAddr = addr
            .parse()
            .unwrap_or_else(|e| panic!("ServerSpec {name}: bad address {addr:?}: {e}"));
        assert!(
            addr.is_loopback(),
            "ServerSpec {name}: {addr} is not a loopback address"
        );
        let mut name = name.to_string();
        if !name.ends_with('.') {
            name.push('.');
        }
        ServerSpec {
            name,
            addr,
            zones: zones.iter().map(|z| z.to_string()).collect(),
            root: false,
            extra_additional: Vec::new(),
        }
    }

    pub fn root(mut self) -> Self {
        self.root = true;
        self
    }

    pub fn extra_additional(mut self, line: &str) -> Self {
        self.extra_additional.push(line.to_string());
        self
    }
}

/// Aborts the task when dropped, so a panicking test still tears its servers down.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A running hierarchy. Dropping it stops every server.
pub struct Sim {
    servers: Vec<AuthServer>,
    port: u16,
    hints_path: PathBuf,
    hints_text: String,
    // Field order matters only loosely: tasks are aborted before the tempdir goes.
    _tasks: Vec<AbortOnDrop>,
    _dir: tempfile::TempDir,
}

const BIND_ATTEMPTS: usize = 64;

impl Sim {
    /// Binds UDP+TCP on every address with one shared port, retrying with a
    /// new random port if any bind fails. Panics with a readable message if
    /// a zone does not parse or no port can be found.
    pub async fn start(specs: Vec<ServerSpec>) -> Sim {
        assert!(!specs.is_empty(), "Sim::start: no servers given");
        for (i, a) in specs.iter().enumerate() {
            for b in &specs[i + 1..] {
                assert!(
                    a.addr != b.addr,
                    "Sim::start: {} and {} share address {}",
                    a.name,
                    b.name,
                    a.addr
                );
            }
        }
        let mut states = Vec::new();
        for spec in &specs {
            let zones = spec
                .zones
                .iter()
                .map(|text| {
                    Zone::parse(text).unwrap_or_else(|e| {
                        panic!(
                            "Sim: zone for server {} does not parse: {e}\n---\n{text}",
                            spec.name
                        )
                    })
                })
                .collect();
            let mut extra = Vec::new();
            for line in &spec.extra_additional {
                let (_, recs) = zone::parse_records(line).unwrap_or_else(|e| {
                    panic!(
                        "Sim: extra_additional {line:?} for {} does not parse: {e}",
                        spec.name
                    )
                });
                extra.extend(recs);
            }
            states.push(Arc::new(State {
                zones,
                extra_additional: extra,
                faults: Mutex::new(Faults::default()),
                queries: Mutex::new(Vec::new()),
            }));
        }

        let (port, sockets) = bind_all(&specs).await;
        let mut tasks = Vec::new();
        for ((udp, tcp), state) in sockets.into_iter().zip(&states) {
            tasks.push(AbortOnDrop(tokio::spawn(server::serve_udp(
                udp,
                state.clone(),
            ))));
            tasks.push(AbortOnDrop(tokio::spawn(server::serve_tcp(
                tcp,
                state.clone(),
            ))));
        }

        let mut hints = String::new();
        for s in specs.iter().filter(|s| s.root) {
            hints.push_str(&format!(".\t3600000\tNS\t{}\n", s.name));
        }
        for s in specs.iter().filter(|s| s.root) {
            let t = if s.addr.is_ipv4() { "A" } else { "AAAA" };
            hints.push_str(&format!("{}\t3600000\t{t}\t{}\n", s.name, s.addr));
        }
        let dir = tempfile::tempdir().expect("Sim: cannot create tempdir for root hints");
        let hints_path = dir.path().join("root.hints");
        std::fs::write(&hints_path, &hints).expect("Sim: cannot write root hints");

        let servers = specs
            .into_iter()
            .zip(states)
            .map(|(s, state)| AuthServer {
                name: s.name,
                addr: s.addr,
                state,
            })
            .collect();
        Sim {
            servers,
            port,
            hints_path,
            hints_text: hints,
            _tasks: tasks,
            _dir: dir,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn root_hints_path(&self) -> &Path {
        &self.hints_path
    }

    pub fn root_hints_text(&self) -> String {
        self.hints_text.clone()
    }

    /// Looks a server up by spec name (trailing dot optional, any case) or address.
    pub fn server(&self, name_or_addr: &str) -> &AuthServer {
        let key = name_or_addr.trim_end_matches('.');
        self.servers
            .iter()
            .find(|s| {
                s.name.trim_end_matches('.').eq_ignore_ascii_case(key) || s.addr.to_string() == key
            })
            .unwrap_or_else(|| panic!("Sim: no server named or at {name_or_addr:?}"))
    }

    pub fn servers(&self) -> &[AuthServer] {
        &self.servers
    }

    /// Socket address of a server (by name or address) on the shared port.
    pub fn addr_of(&self, name_or_addr: &str) -> SocketAddr {
        SocketAddr::new(self.server(name_or_addr).addr(), self.port)
    }

    pub fn total_queries(&self) -> usize {
        self.servers
            .iter()
            .map(|s| lock(&s.state.queries).len())
            .sum()
    }

    pub fn clear_queries(&self) {
        for s in &self.servers {
            s.clear_queries();
        }
    }
}

type Bound = Vec<(UdpSocket, TcpListener)>;

async fn bind_all(specs: &[ServerSpec]) -> (u16, Bound) {
    let mut last_err = String::new();
    for _ in 0..BIND_ATTEMPTS {
        // Below Linux's ephemeral range so client sockets rarely collide.
        let port: u16 = rand::thread_rng().gen_range(20000..32000);
        let mut bound = Vec::new();
        for s in specs {
            let sa = SocketAddr::new(s.addr, port);
            let udp = match UdpSocket::bind(sa).await {
                Ok(u) => u,
                Err(e) => {
                    last_err = format!("udp {sa}: {e}");
                    break;
                }
            };
            let tcp = match TcpListener::bind(sa).await {
                Ok(t) => t,
                Err(e) => {
                    last_err = format!("tcp {sa}: {e}");
                    break;
                }
            };
            bound.push((udp, tcp));
        }
        if bound.len() == specs.len() {
            return (port, bound);
        }
    }
    panic!(
        "Sim: no port free on all addresses after {BIND_ATTEMPTS} tries; last error: {last_err}"
    );
}

/// Builds a query with a random ID, RD=0, optionally with an OPT record
/// (payload 1232).
pub fn make_query(name: &str, qtype: RecordType, edns: bool) -> Message {
    let name = Name::from_ascii(name).unwrap_or_else(|e| panic!("bad query name {name:?}: {e}"));
    let mut m = Message::new(rand::random(), MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = false;
    m.add_query(Query::query(name, qtype));
    if edns {
        let mut e = Edns::new();
        e.set_max_payload(1232);
        m.set_edns(e);
    }
    m
}

/// Sends raw bytes from `bind` and collects every datagram (with its source)
/// that arrives within `timeout_ms`. Waits the whole time, so forged-then-real
/// sequences are seen in order.
pub async fn udp_collect(
    bind: IpAddr,
    server: SocketAddr,
    bytes: &[u8],
    timeout_ms: u64,
) -> Vec<(SocketAddr, Vec<u8>)> {
    let mut out = Vec::new();
    let Ok(sock) = UdpSocket::bind(SocketAddr::new(bind, 0)).await else {
        return out;
    };
    if sock.send_to(bytes, server).await.is_err() {
        return out;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_millis(timeout_ms);
    let mut buf = vec![0u8; 65535];
    while let Ok(Ok((n, from))) = tokio::time::timeout_at(deadline, sock.recv_from(&mut buf)).await
    {
        out.push((from, buf[..n].to_vec()));
    }
    out
}

/// Sends raw bytes and returns the first datagram from any source (the
/// harness does no ID/source validation: that is the resolver's job).
pub async fn exchange_udp_raw_from(
    bind: IpAddr,
    server: SocketAddr,
    bytes: &[u8],
    timeout_ms: u64,
) -> Option<(SocketAddr, Vec<u8>)> {
    let sock = UdpSocket::bind(SocketAddr::new(bind, 0)).await.ok()?;
    sock.send_to(bytes, server).await.ok()?;
    let mut buf = vec![0u8; 65535];
    let (n, from) =
        tokio::time::timeout(Duration::from_millis(timeout_ms), sock.recv_from(&mut buf))
            .await
            .ok()?
            .ok()?;
    Some((from, buf[..n].to_vec()))
}

pub async fn exchange_udp_from(
    bind: IpAddr,
    server: SocketAddr,
    msg: &Message,
    timeout_ms: u64,
) -> Option<Message> {
    let bytes = msg.to_vec().ok()?;
    let (_, reply) = exchange_udp_raw_from(bind, server, &bytes, timeout_ms).await?;
    Message::from_vec(&reply).ok()
}

pub async fn exchange_udp(server: SocketAddr, msg: &Message, timeout_ms: u64) -> Option<Message> {
    exchange_udp_from(loopback_v4(), server, msg, timeout_ms).await
}

pub async fn query_udp(
    server: SocketAddr,
    name: &str,
    qtype: RecordType,
    timeout_ms: u64,
) -> Option<Message> {
    exchange_udp(server, &make_query(name, qtype, false), timeout_ms).await
}

/// Like `query_udp` but from a chosen loopback source address.
pub async fn query_udp_from(
    bind: IpAddr,
    server: SocketAddr,
    name: &str,
    qtype: RecordType,
    timeout_ms: u64,
) -> Option<Message> {
    exchange_udp_from(bind, server, &make_query(name, qtype, false), timeout_ms).await
}

/// Writes one RFC 7766 length-prefixed message.
pub async fn tcp_write_msg(stream: &mut TcpStream, msg: &Message) -> std::io::Result<()> {
    let bytes = msg
        .to_vec()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
    let mut out = (bytes.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(&bytes);
    stream.write_all(&out).await
}

/// Reads one length-prefixed message; None on timeout, EOF or garbage.
pub async fn tcp_read_msg(stream: &mut TcpStream, timeout_ms: u64) -> Option<Message> {
    let read = async {
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).await.ok()?;
        let mut body = vec![0u8; usize::from(u16::from_be_bytes(len))];
        stream.read_exact(&mut body).await.ok()?;
        Message::from_vec(&body).ok()
    };
    tokio::time::timeout(Duration::from_millis(timeout_ms), read)
        .await
        .ok()
        .flatten()
}

pub async fn tcp_connect(server: SocketAddr, timeout_ms: u64) -> Option<TcpStream> {
    tokio::time::timeout(
        Duration::from_millis(timeout_ms),
        TcpStream::connect(server),
    )
    .await
    .ok()?
    .ok()
}

pub async fn exchange_tcp(server: SocketAddr, msg: &Message, timeout_ms: u64) -> Option<Message> {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(timeout_ms);
    let fut = async {
        let mut s = TcpStream::connect(server).await.ok()?;
        tcp_write_msg(&mut s, msg).await.ok()?;
        tcp_read_msg(&mut s, timeout_ms).await
    };
    tokio::time::timeout_at(deadline, fut).await.ok().flatten()
}

pub async fn query_tcp(
    server: SocketAddr,
    name: &str,
    qtype: RecordType,
    timeout_ms: u64,
) -> Option<Message> {
    exchange_tcp(server, &make_query(name, qtype, false), timeout_ms).await
}

/// Asks `addr` (resolvd) over UDP, waiting up to 6 s; panics without a reply.
pub async fn ask(addr: SocketAddr, name: &str, t: RecordType) -> Message {
    query_udp(addr, name, t, 6000)
        .await
        .unwrap_or_else(|| panic!("resolvd did not reply to {name} {t}"))
}

/// The addresses in a reply's A and AAAA answers, sorted.
pub fn addrs(m: &Message) -> Vec<String> {
    let mut v: Vec<String> = m
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            hickory_proto::rr::RData::A(a) => Some(a.0.to_string()),
            hickory_proto::rr::RData::AAAA(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect();
    v.sort();
    v
}

fn loopback_v4() -> IpAddr {
    IpAddr::from([127, 0, 0, 1])
}
