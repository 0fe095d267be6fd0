//! One simulated authoritative server: UDP and TCP (RFC 7766) listeners on
//! a loopback address, the per-query responder, and the fault switches.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::{DNSClass, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinSet;

use super::zone::Zone;

/// Payload size advertised in our OPT (the DNS Flag Day 2020 value).
const OUR_PAYLOAD: u16 = 1232;
/// Idle TCP connections are closed after this, so no task outlives a test by much.
const TCP_IDLE: Duration = Duration::from_secs(10);

#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// Never answer (UDP and TCP); queries are still recorded.
    pub silent: bool,
    /// Answer every query with this rcode and empty sections.
    pub rcode: Option<ResponseCode>,
    /// Every UDP reply is TC=1 with empty sections; TCP is unaffected.
    pub truncate_udp: bool,
    /// Wait this long before answering.
    pub delay_ms: u64,
    /// Reply with ID+1 (and, with `also_correct`, the real reply after it).
    pub wrong_id: bool,
    /// With `wrong_id` / `wrong_port`: send the genuine reply after the forged one.
    pub also_correct: bool,
    /// Send the UDP reply from a different source port.
    pub wrong_port: bool,
    /// TCP: accept, then close at once without reading.
    pub tcp_close: bool,
    /// Queries with an OPT record get FORMERR without OPT (pre-EDNS server).
    pub formerr_on_edns: bool,
    /// Queries of these types get a "lame" reply: NOERROR, AA=0, no answer
    /// and no referral (the zone's SOA is left in the authority section, as
    /// a misconfigured server that is not authoritative sends it).
    pub lame_types: Vec<RecordType>,
    /// `(asked, served)`: a query of type `asked` is answered with the
    /// records of type `served` at the name instead (a broken server).
    pub answer_as: Option<(RecordType, RecordType)>,
    /// Negative answers are sent without the SOA in the authority section.
    pub strip_soa: bool,
    /// Every reply has AA=0 (a server that is not authoritative).
    pub clear_aa: bool,
    /// The reply's question is lower-cased (a server that does not keep
    /// the query's letter case, which defeats 0x20).
    pub lowercase_question: bool,
    /// The reply's COOKIE option carries a client cookie other than the
    /// query's (what an off-path forger who cannot see it would send).
    pub wrong_client_cookie: bool,
}

/// The server cookie every simulated server hands out (RFC 7873 §4.2
/// allows 8 to 32 bytes).
pub const SIM_SERVER_COOKIE: &[u8; 8] = b"simcooki";

#[derive(Clone, Debug)]
pub struct SeenQuery {
    /// As received (case preserved), with trailing dot.
    pub name: String,
    pub qtype: RecordType,
    pub tcp: bool,
    pub edns: bool,
    pub id: u16,
    /// RD (recursion desired) as the query set it.
    pub rd: bool,
    /// The COOKIE option's data, when the query had one.
    pub cookie: Option<Vec<u8>>,
}

pub(crate) struct State {
    pub zones: Vec<Zone>,
    pub extra_additional: Vec<Record>,
    pub faults: Mutex<Faults>,
    pub queries: Mutex<Vec<SeenQuery>>,
}

/// Handle to one simulated server; owned by `Sim`.
pub struct AuthServer {
    pub(crate) name: String,
    pub(crate) addr: IpAddr,
    pub(crate) state: Arc<State>,
}

impl AuthServer {
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Takes effect for the next query received.
    pub fn set_faults(&self, f: Faults) {
        *lock(&self.state.faults) = f;
    }

    pub fn queries(&self) -> Vec<SeenQuery> {
        lock(&self.state.queries).clone()
    }

    pub fn clear_queries(&self) {
        lock(&self.state.queries).clear();
    }

    /// Runs the responder on raw bytes without the network (the query is
    /// recorded, `delay_ms` and forging are skipped). Handy for fuzzing.
    pub fn handle_bytes(&self, bytes: &[u8], tcp: bool) -> Option<Vec<u8>> {
        respond(&self.state, bytes, tcp).0.map(|o| o.reply)
    }
}

/// A panicking test thread must not poison the sim for the remaining assertions.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What to send back for one query. `None` = stay silent.
struct Outcome {
    reply: Vec<u8>,
    /// Forged copy (ID+1) to send first, when `wrong_id` is set.
    forged: Option<Vec<u8>>,
    send_real: bool,
}

fn formerr_from_header(bytes: &[u8]) -> Option<Vec<u8>> {
    // Without a 12-byte header there is no ID to echo, so drop it (RFC 1035 §4.1.1).
    if bytes.len() < 12 || bytes[2] & 0x80 != 0 {
        return None;
    }
    let mut out = vec![0u8; 12];
    out[0] = bytes[0];
    out[1] = bytes[1];
    // QR=1, keep opcode and RD; rcode FORMERR.
    out[2] = 0x80 | (bytes[2] & 0x79);
    out[3] = ResponseCode::FormErr.low();
    Some(out)
}

fn respond(state: &State, bytes: &[u8], tcp: bool) -> (Option<Outcome>, u64) {
    let Ok(query) = Message::from_vec(bytes) else {
        return (
            formerr_from_header(bytes).map(|reply| Outcome {
                reply,
                forged: None,
                send_real: true,
            }),
            0,
        );
    };
    if query.metadata.message_type != MessageType::Query {
        return (None, 0);
    }
    let edns = query.edns.is_some();
    let cookie = query.edns.as_ref().and_then(|e| {
        match e.option(hickory_proto::rr::rdata::opt::EdnsCode::Cookie) {
            Some(hickory_proto::rr::rdata::opt::EdnsOption::Unknown(10, data)) => {
                Some(data.clone())
            }
            _ => None,
        }
    });
    if let Some(q) = query.queries.first() {
        lock(&state.queries).push(SeenQuery {
            name: q.name().to_string(),
            qtype: q.query_type(),
            tcp,
            edns,
            id: query.metadata.id,
            rd: query.metadata.recursion_desired,
            cookie: cookie.clone(),
        });
    }
    let faults = lock(&state.faults).clone();
    if faults.silent {
        return (None, faults.delay_ms);
    }

    let mut resp = Message::new(
        query.metadata.id,
        MessageType::Response,
        query.metadata.op_code,
    );
    resp.metadata.recursion_desired = query.metadata.recursion_desired;
    resp.metadata.recursion_available = false;
    resp.metadata.checking_disabled = query.metadata.checking_disabled;
    for q in &query.queries {
        let mut q = q.clone();
        if faults.lowercase_question {
            q.set_name(q.name.to_lowercase());
        }
        resp.add_query(q);
    }
    // A cookie-aware server (RFC 7873 §5.2): the client cookie echoed,
    // then ours.
    let reply_cookie = cookie.as_ref().and_then(|c| c.get(..8)).map(|client| {
        let mut data = client.to_vec();
        if faults.wrong_client_cookie {
            data[0] ^= 0xff;
        }
        data.extend_from_slice(SIM_SERVER_COOKIE);
        data
    });
    let add_opt = |resp: &mut Message| {
        let mut e = Edns::new();
        e.set_max_payload(OUR_PAYLOAD);
        if let Some(c) = &reply_cookie {
            e.options_mut()
                .insert(hickory_proto::rr::rdata::opt::EdnsOption::Unknown(
                    10,
                    c.clone(),
                ));
        }
        resp.set_edns(e);
    };

    if faults.formerr_on_edns && edns {
        resp.metadata.response_code = ResponseCode::FormErr;
    } else if query.queries.len() != 1 {
        resp.metadata.response_code = ResponseCode::FormErr;
        if edns {
            add_opt(&mut resp);
        }
    } else if let Some(rc) = faults.rcode {
        resp.metadata.response_code = rc;
        if edns {
            add_opt(&mut resp);
        }
    } else {
        if edns {
            add_opt(&mut resp);
        }
        let q = &query.queries[0];
        if query.metadata.op_code != OpCode::Query {
            resp.metadata.response_code = ResponseCode::NotImp;
        } else if q.query_class() != DNSClass::IN && q.query_class() != DNSClass::ANY {
            resp.metadata.response_code = ResponseCode::Refused;
        } else {
            let asked = q.query_type();
            let served = match faults.answer_as {
                Some((a, s)) if a == asked => s,
                _ => asked,
            };
            answer_into(state, q.name(), served, &mut resp);
            if faults.lame_types.contains(&asked) {
                resp.metadata.authoritative = false;
                std::mem::take(&mut resp.answers);
                let soa: Vec<Record> = std::mem::take(&mut resp.authorities)
                    .into_iter()
                    .filter(|r| r.record_type() == RecordType::SOA)
                    .collect();
                resp.add_authorities(soa);
                std::mem::take(&mut resp.additionals);
            }
            if faults.clear_aa {
                resp.metadata.authoritative = false;
            }
            if faults.strip_soa {
                let kept: Vec<Record> = std::mem::take(&mut resp.authorities)
                    .into_iter()
                    .filter(|r| r.record_type() != RecordType::SOA)
                    .collect();
                resp.add_authorities(kept);
            }
        }
    }

    let limit = if tcp {
        usize::from(u16::MAX)
    } else if faults.truncate_udp {
        0
    } else {
        // RFC 6891 §6.2.5: payload values below 512 are treated as 512.
        usize::from(
            query
                .edns
                .as_ref()
                .map_or(512, |e| e.max_payload().max(512)),
        )
    };
    let mut reply = match resp.to_vec() {
        Ok(v) => v,
        Err(_) => return (None, faults.delay_ms),
    };
    if reply.len() > limit {
        std::mem::take(&mut resp.answers);
        std::mem::take(&mut resp.authorities);
        std::mem::take(&mut resp.additionals);
        resp.metadata.truncation = true;
        match resp.to_vec() {
            Ok(v) => reply = v,
            Err(_) => return (None, faults.delay_ms),
        }
    }
    let forged = faults.wrong_id.then(|| {
        let mut f = reply.clone();
        let id = query.metadata.id.wrapping_add(1).to_be_bytes();
        f[0] = id[0];
        f[1] = id[1];
        f
    });
    let send_real = !(faults.wrong_id || faults.wrong_port) || faults.also_correct;
    (
        Some(Outcome {
            reply,
            forged,
            send_real,
        }),
        faults.delay_ms,
    )
}

fn answer_into(
    state: &State,
    qname: &hickory_proto::rr::Name,
    qtype: RecordType,
    resp: &mut Message,
) {
    // Longest origin wins, so one server can hold a parent and its child zone.
    let zone = state
        .zones
        .iter()
        .filter(|z| z.origin.zone_of(qname))
        .max_by_key(|z| z.origin.iter().count());
    match zone {
        None => {
            resp.metadata.response_code = ResponseCode::Refused;
        }
        Some(z) => {
            let r = z.answer(qname, qtype);
            resp.metadata.response_code = r.rcode;
            resp.metadata.authoritative = r.aa;
            resp.add_answers(r.answer)
                .add_authorities(r.authority)
                .add_additionals(r.additional);
        }
    }
    resp.add_additionals(state.extra_additional.iter().cloned());
}

pub(crate) async fn serve_udp(sock: UdpSocket, state: Arc<State>) {
    let sock = Arc::new(sock);
    // Owning the per-query tasks here means aborting this task cancels them too.
    let mut inflight = JoinSet::new();
    let mut buf = vec![0u8; 65535];
    loop {
        while inflight.try_join_next().is_some() {}
        let (len, peer) = match sock.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(_) => continue,
        };
        let bytes = buf[..len].to_vec();
        let (sock, state) = (sock.clone(), state.clone());
        inflight.spawn(async move {
            let wrong_port = lock(&state.faults).wrong_port;
            let (outcome, delay) = respond(&state, &bytes, false);
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            let Some(o) = outcome else { return };
            if wrong_port {
                let local = sock.local_addr().map(|a| a.ip());
                if let Ok(ip) = local {
                    if let Ok(other) = UdpSocket::bind(SocketAddr::new(ip, 0)).await {
                        let forged = o.forged.as_ref().unwrap_or(&o.reply);
                        let _ = other.send_to(forged, peer).await;
                    }
                }
            } else if let Some(f) = &o.forged {
                let _ = sock.send_to(f, peer).await;
            }
            if o.send_real {
                let _ = sock.send_to(&o.reply, peer).await;
            }
        });
    }
}

pub(crate) async fn serve_tcp(listener: TcpListener, state: Arc<State>) {
    let mut conns = JoinSet::new();
    loop {
        while conns.try_join_next().is_some() {}
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        if lock(&state.faults).tcp_close {
            drop(stream);
            continue;
        }
        conns.spawn(serve_conn(stream, state.clone()));
    }
}

async fn serve_conn(mut stream: TcpStream, state: Arc<State>) {
    loop {
        let mut len = [0u8; 2];
        match tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut len)).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        let mut body = vec![0u8; usize::from(u16::from_be_bytes(len))];
        match tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut body)).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        let (outcome, delay) = respond(&state, &body, true);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        let Some(o) = outcome else { continue };
        let mut frames = Vec::new();
        if let Some(f) = &o.forged {
            frames.push(f);
        }
        if o.send_real || o.forged.is_none() {
            frames.push(&o.reply);
        }
        for f in frames {
            let mut out = (f.len() as u16).to_be_bytes().to_vec();
            out.extend_from_slice(f);
            if stream.write_all(&out).await.is_err() {
                return;
            }
        }
    }
}
