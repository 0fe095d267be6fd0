//! Fast parse of an incoming client query: header, the one question, and the
//! EDNS OPT record (RFC 1035 §4.1, RFC 6891 §6, RFC 7871 §6 for ECS,
//! RFC 7873 §4 for COOKIE).
//!
//! Nothing here allocates: the question is kept as a slice of the packet
//! (so the reply echoes the client's letter case) and the lower-cased lookup
//! key is built into a fixed array. Every read is bounds-checked; bytes from
//! the network can make this return an error, never panic.

use super::{skip_name, Cursor, OPT};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Maximum wire length of a domain name (RFC 1035 §3.1).
pub const MAX_NAME: usize = 255;
/// Key length: lower-cased wire name + QTYPE.
pub const MAX_KEY: usize = MAX_NAME + 2;

/// The EDNS Client Subnet option from a query (RFC 7871 §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientSubnet {
    /// The client's network, zero beyond `source_prefix`.
    pub addr: IpAddr,
    /// SOURCE PREFIX-LENGTH.
    pub source_prefix: u8,
}

/// What a query's OPT record asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edns {
    /// Requestor's UDP payload size (values below 512 count as 512).
    pub payload: u16,
    /// EDNS version; we implement 0 (RFC 6891 §6.1.3).
    pub version: u8,
    /// The DO bit, copied to the reply (RFC 3225 §3).
    pub dnssec_ok: bool,
    /// EDNS Client Subnet, if present.
    pub ecs: Option<ClientSubnet>,
    /// DNS Cookie, if present.
    pub cookie: Option<Cookie>,
    /// The query carried a Padding option (RFC 7830): on an encrypted
    /// transport its reply is padded too (RFC 8467 §4.1).
    pub padding: bool,
}

/// The COOKIE option of a query (RFC 7873 §4): a client cookie and, after
/// the first exchange, the server cookie we gave that client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cookie {
    /// The client cookie.
    pub client: [u8; 8],
    server: [u8; 32],
    server_len: u8,
}

impl Cookie {
    /// The server cookie as received (empty when absent).
    pub fn server(&self) -> &[u8] {
        self.server.get(..self.server_len as usize).unwrap_or(&[])
    }
}

/// A parsed query; borrows the packet.
#[derive(Debug, Clone, Copy)]
pub struct Query<'a> {
    /// Message ID, echoed.
    pub id: u16,
    /// Header flags word (QR..RCODE), as received.
    pub flags: u16,
    /// The question section exactly as received: name, QTYPE, QCLASS.
    pub question: &'a [u8],
    /// QTYPE.
    pub qtype: u16,
    /// QCLASS.
    pub qclass: u16,
    /// OPT record, when the query carried one.
    pub edns: Option<Edns>,
    key: [u8; MAX_KEY],
    key_len: usize,
}

/// Why a query cannot be answered normally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Not worth a reply: shorter than a header, or a response (QR=1).
    Drop,
    /// Reply with this RCODE (header only, plus the question when it was
    /// readable). `question_end` is the offset after the question, or 12.
    Error {
        /// RCODE to send (FORMERR, NOTIMP, REFUSED, BADVERS's low bits).
        rcode: u16,
        /// Offset where the readable question ends (12 when none).
        question_end: usize,
        /// The query had a usable OPT (so the error reply carries one).
        edns: Option<Edns>,
    },
}

/// RCODE values used here (RFC 1035 §4.1.1, RFC 6891 §9).
pub mod rcode {
    /// Format error.
    pub const FORMERR: u16 = 1;
    /// Server failure.
    pub const SERVFAIL: u16 = 2;
    /// Name error.
    pub const NXDOMAIN: u16 = 3;
    /// Not implemented.
    pub const NOTIMP: u16 = 4;
    /// Refused.
    pub const REFUSED: u16 = 5;
    /// Bad EDNS version (extended RCODE 16).
    pub const BADVERS: u16 = 16;
}

const CLASS_IN: u16 = 1;
const QTYPE_IXFR: u16 = 251;
const QTYPE_AXFR: u16 = 252;
const CLASS_CH: u16 = 3;
const CLASS_ANY: u16 = 255;

impl<'a> Query<'a> {
    /// Parses a query. Errors say whether to drop it or answer with an RCODE.
    pub fn parse(pkt: &'a [u8]) -> Result<Query<'a>, Rejection> {
        if pkt.len() < 12 {
            return Err(Rejection::Drop);
        }
        let mut c = Cursor::new(pkt);
        let id = c.u16().ok_or(Rejection::Drop)?;
        let flags = c.u16().ok_or(Rejection::Drop)?;
        if flags & 0x8000 != 0 {
            return Err(Rejection::Drop);
        }
        let qd = c.u16().ok_or(Rejection::Drop)?;
        let an = c.u16().ok_or(Rejection::Drop)?;
        let ns = c.u16().ok_or(Rejection::Drop)?;
        let ar = c.u16().ok_or(Rejection::Drop)?;
        let formerr = |end| Rejection::Error {
            rcode: rcode::FORMERR,
            question_end: end,
            edns: None,
        };
        let opcode = (flags >> 11) & 0xf;
        if qd != 1 {
            return Err(if opcode != 0 {
                Rejection::Error {
                    rcode: rcode::NOTIMP,
                    question_end: 12,
                    edns: None,
                }
            } else {
                formerr(12)
            });
        }
        // Question name: plain labels only, lower-cased into the key as we go.
        let mut key = [0u8; MAX_KEY];
        let mut klen = 0usize;
        loop {
            let len = c.u8().ok_or(formerr(12))? as usize;
            if len & 0xc0 != 0 {
                // Compression in a question has nothing earlier to point at.
                return Err(formerr(12));
            }
            if klen + 1 + len > MAX_NAME {
                return Err(formerr(12));
            }
            key[klen] = len as u8;
            klen += 1;
            if len == 0 {
                break;
            }
            let label = c.bytes(len).ok_or(formerr(12))?;
            for (dst, b) in key[klen..klen + len].iter_mut().zip(label) {
                *dst = b.to_ascii_lowercase();
            }
            klen += len;
        }
        let qtype = c.u16().ok_or(formerr(12))?;
        let qclass = c.u16().ok_or(formerr(12))?;
        let qend = c.pos();
        let question = pkt.get(12..qend).ok_or(formerr(12))?;
        key[klen] = (qtype >> 8) as u8;
        key[klen + 1] = qtype as u8;
        let key_len = klen + 2;

        // Skip any answer/authority records, then look for OPT.
        for _ in 0..(an as usize + ns as usize) {
            skip_rr(&mut c).ok_or(formerr(qend))?;
        }
        let mut edns = None;
        for _ in 0..ar {
            let start = c.pos();
            skip_name(&mut c).ok_or(formerr(qend))?;
            let owner_root = c.pos() == start + 1;
            let rtype = c.u16().ok_or(formerr(qend))?;
            let class = c.u16().ok_or(formerr(qend))?;
            let ttl = c.u32().ok_or(formerr(qend))?;
            let rdlen = c.u16().ok_or(formerr(qend))? as usize;
            let rdata = c.bytes(rdlen).ok_or(formerr(qend))?;
            if rtype == OPT {
                // RFC 6891 §6.1.1: more than one OPT, or one not at the root,
                // is a FORMERR.
                if edns.is_some() || !owner_root {
                    return Err(formerr(qend));
                }
                let version = (ttl >> 16) as u8;
                let mut e = Edns {
                    payload: class.max(512),
                    version,
                    dnssec_ok: ttl & 0x8000 != 0,
                    ecs: None,
                    cookie: None,
                    padding: false,
                };
                let opts = parse_options(rdata).map_err(|_| Rejection::Error {
                    rcode: rcode::FORMERR,
                    question_end: qend,
                    edns: Some(e),
                })?;
                e.ecs = opts.ecs;
                e.cookie = opts.cookie;
                e.padding = opts.padding;
                edns = Some(e);
            }
        }
        let reject = |rcode| Rejection::Error {
            rcode,
            question_end: qend,
            edns,
        };
        if let Some(e) = edns {
            if e.version != 0 {
                return Err(reject(rcode::BADVERS));
            }
        }
        if opcode != 0 {
            return Err(reject(rcode::NOTIMP));
        }
        // Zone transfers are not something a resolver serves (Unbound
        // refuses them too); over UDP they would only invite amplification.
        if matches!(qtype, QTYPE_IXFR | QTYPE_AXFR) {
            return Err(reject(rcode::REFUSED));
        }
        match qclass {
            CLASS_IN => {}
            CLASS_CH | CLASS_ANY => return Err(reject(rcode::REFUSED)),
            _ => return Err(reject(rcode::NOTIMP)),
        }
        Ok(Query {
            id,
            flags,
            question,
            qtype,
            qclass,
            edns,
            key,
            key_len,
        })
    }

    /// Lower-cased wire name followed by QTYPE: the cache key.
    pub fn key(&self) -> &[u8] {
        self.key.get(..self.key_len).unwrap_or(&[])
    }

    /// Lower-cased wire name of the question.
    pub fn name_wire(&self) -> &[u8] {
        self.key
            .get(..self.key_len.saturating_sub(2))
            .unwrap_or(&[])
    }

    /// The RD bit.
    pub fn recursion_desired(&self) -> bool {
        self.flags & 0x0100 != 0
    }

    /// The CD bit.
    pub fn checking_disabled(&self) -> bool {
        self.flags & 0x0010 != 0
    }

    /// Largest reply the client accepts over UDP.
    pub fn udp_limit(&self) -> usize {
        self.edns.map(|e| e.payload as usize).unwrap_or(512)
    }
}

fn skip_rr(c: &mut Cursor<'_>) -> Option<()> {
    skip_name(c)?;
    c.bytes(8)?;
    let rdlen = c.u16()? as usize;
    c.bytes(rdlen)?;
    Some(())
}

/// The OPT options the reply depends on.
struct Options {
    ecs: Option<ClientSubnet>,
    cookie: Option<Cookie>,
    padding: bool,
}

/// EDNS option code of Padding (RFC 7830 §4).
pub const OPTION_PADDING: u16 = 12;

/// Walks the OPT options; returns ECS, COOKIE and whether Padding was
/// present. Malformed options → Err.
fn parse_options(mut rdata: &[u8]) -> Result<Options, ()> {
    let mut ecs = None;
    let mut cookie = None;
    let mut padding = false;
    while !rdata.is_empty() {
        let (hdr, rest) = rdata.split_at_checked(4).ok_or(())?;
        let code = u16::from_be_bytes([hdr[0], hdr[1]]);
        let len = u16::from_be_bytes([hdr[2], hdr[3]]) as usize;
        let (data, rest) = rest.split_at_checked(len).ok_or(())?;
        match code {
            8 if ecs.is_none() => ecs = Some(parse_ecs(data)?),
            10 if cookie.is_none() => cookie = Some(parse_cookie(data)?),
            8 | 10 => return Err(()),
            OPTION_PADDING => padding = true,
            _ => {}
        }
        rdata = rest;
    }
    Ok(Options {
        ecs,
        cookie,
        padding,
    })
}

/// RFC 7873 §5.2.2: a client cookie of 8 bytes, then nothing or a server
/// cookie of 8 to 32 bytes; any other length is a FORMERR.
fn parse_cookie(data: &[u8]) -> Result<Cookie, ()> {
    let (client, server) = data.split_at_checked(8).ok_or(())?;
    if !(server.is_empty() || (8..=32).contains(&server.len())) {
        return Err(());
    }
    let mut c = Cookie {
        client: client.try_into().map_err(|_| ())?,
        server: [0; 32],
        server_len: server.len() as u8,
    };
    c.server
        .get_mut(..server.len())
        .ok_or(())?
        .copy_from_slice(server);
    Ok(c)
}

/// RFC 7871 §6: FAMILY, SOURCE PREFIX-LENGTH, SCOPE (must be 0 in queries),
/// then exactly ceil(source/8) address bytes.
fn parse_ecs(data: &[u8]) -> Result<ClientSubnet, ()> {
    let (hdr, addr) = data.split_at_checked(4).ok_or(())?;
    let family = u16::from_be_bytes([hdr[0], hdr[1]]);
    let source = hdr[2];
    let scope = hdr[3];
    if scope != 0 {
        return Err(());
    }
    let needed = (source as usize).div_ceil(8);
    if addr.len() != needed {
        return Err(());
    }
    let ip = match family {
        1 if source <= 32 => {
            let mut b = [0u8; 4];
            b[..needed].copy_from_slice(addr);
            IpAddr::V4(Ipv4Addr::from(b))
        }
        2 if source <= 128 => {
            let mut b = [0u8; 16];
            b[..needed].copy_from_slice(addr);
            IpAddr::V6(Ipv6Addr::from(b))
        }
        _ => return Err(()),
    };
    Ok(ClientSubnet {
        addr: ip,
        source_prefix: source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &[u8], qtype: u16, class: u16, opt: Option<&[u8]>) -> Vec<u8> {
        let mut p = vec![
            0x12,
            0x34,
            0x01,
            0x00,
            0,
            1,
            0,
            0,
            0,
            0,
            0,
            opt.is_some() as u8,
        ];
        p.extend_from_slice(name);
        p.extend_from_slice(&qtype.to_be_bytes());
        p.extend_from_slice(&class.to_be_bytes());
        if let Some(o) = opt {
            p.extend_from_slice(o);
        }
        p
    }

    #[test]
    fn parses_question_and_lowercases_key() {
        let p = query(b"\x03WwW\x07example\x03com\x00", 1, 1, None);
        let q = Query::parse(&p).unwrap();
        assert_eq!(q.id, 0x1234);
        assert_eq!(q.key(), b"\x03www\x07example\x03com\x00\x00\x01");
        assert_eq!(&q.question[..4], b"\x03WwW");
        assert_eq!(q.udp_limit(), 512);
    }

    #[test]
    fn opt_with_ecs_is_read() {
        let opt = b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x0b\x00\x08\x00\x07\x00\x01\x18\x00\x0a\x01\x02";
        let p = query(b"\x01a\x00", 1, 1, Some(opt));
        let q = Query::parse(&p).unwrap();
        let e = q.edns.unwrap();
        assert_eq!(e.payload, 1232);
        let ecs = e.ecs.unwrap();
        assert_eq!(ecs.source_prefix, 24);
        assert_eq!(ecs.addr, IpAddr::from([10, 1, 2, 0]));
        assert!(!e.padding);
    }

    #[test]
    fn padding_option_is_noticed() {
        let opt = b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x08\x00\x0c\x00\x04\x00\x00\x00\x00";
        let p = query(b"\x01a\x00", 1, 1, Some(opt));
        assert!(Query::parse(&p).unwrap().edns.unwrap().padding);
    }

    #[test]
    fn every_truncation_of_a_query_is_rejected_without_panic() {
        let opt = b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x0b\x00\x08\x00\x07\x00\x01\x18\x00\x0a\x01\x02";
        let p = query(b"\x03www\x07example\x03com\x00", 1, 1, Some(opt));
        for n in 0..p.len() {
            assert!(Query::parse(&p[..n]).is_err(), "prefix {n} accepted");
        }
    }

    #[test]
    fn zone_transfer_requests_are_refused() {
        for t in [251u16, 252] {
            let p = query(b"\x01a\x00", t, 1, None);
            assert!(matches!(
                Query::parse(&p),
                Err(Rejection::Error { rcode: 5, .. })
            ));
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..20_000 {
            let n = rng.gen_range(0..64);
            let mut p: Vec<u8> = (0..n).map(|_| rng.gen()).collect();
            if p.len() > 5 {
                p[2] &= 0x7f;
                p[4] = 0;
                p[5] = 1;
            }
            let _ = Query::parse(&p);
        }
    }
}
