//! PROXY protocol version 2 (HAProxy's "PROXY protocol" specification,
//! §2.2, binary header): a TLS-terminating or TCP load balancer in front of
//! resolvd prefixes each connection with the client's real address.
//!
//! Only sources in `[server] proxy_protocol_from` may send the header, and
//! from them it is required; any other source that starts a connection
//! with a PROXY signature (v2 binary or v1 text) is cut off, so a client
//! cannot forge its address past the access list or geo routing. The
//! parser reads a bounded number of bytes and never panics on hostile
//! input.

use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::TcpStream;

/// The 12-byte v2 signature (§2.2).
pub const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// Longest address-plus-TLV block accepted. Real proxies send 12 or 36
/// address bytes and a few TLVs; more than this is not a proxy we know.
const MAX_BLOCK: usize = 2048;

/// Why a connection's PROXY header was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    /// The source is not in `proxy_protocol_from` but sent a header.
    #[error("PROXY header from {0}, which is not in proxy_protocol_from")]
    NotAllowed(IpAddr),
    /// The bytes are not a v2 header.
    #[error("malformed PROXY v2 header: {0}")]
    Malformed(&'static str),
    /// The connection closed or stalled before the header was complete.
    #[error("connection closed or timed out before the PROXY header")]
    Incomplete,
}

/// What a parsed header says about the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// PROXY command over TCP/IPv4 or TCP/IPv6: the client's address.
    Proxied(SocketAddr),
    /// LOCAL command (the proxy's own health check), or an address family
    /// we do not map (UNSPEC, UNIX, UDP): §2.2 says to use the real
    /// connection's addresses then.
    Local,
}

/// Which sources may send PROXY headers.
#[derive(Debug, Clone, Default)]
pub struct ProxyPolicy {
    from: Vec<IpNet>,
}

impl ProxyPolicy {
    /// A policy trusting `from`.
    pub fn new(from: Vec<IpNet>) -> ProxyPolicy {
        ProxyPolicy { from }
    }

    /// Whether `ip` is a trusted proxy.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        self.from.iter().any(|n| n.contains(&ip))
    }

    /// The client's address for a new connection from `peer`: read from
    /// the header when `peer` is a trusted proxy, `peer` itself otherwise.
    /// An error means the connection must be closed.
    pub async fn client_addr(
        &self,
        stream: &mut TcpStream,
        peer: SocketAddr,
        limit: Duration,
    ) -> Result<SocketAddr, ProxyError> {
        if self.trusts(peer.ip()) {
            return match tokio::time::timeout(limit, read_header(stream)).await {
                Ok(Ok(Header::Proxied(a))) => Ok(a),
                Ok(Ok(Header::Local)) => Ok(peer),
                Ok(Err(e)) => Err(e),
                Err(_) => Err(ProxyError::Incomplete),
            };
        }
        // Clients speak first on every protocol served here, so peeking
        // costs no round trip. A v2 signature starts with CR; v1 with
        // "PROXY", which no HTTP method, TLS record or sane DNS length
        // prefix does.
        let mut head = [0u8; 5];
        let n = match tokio::time::timeout(limit, stream.peek(&mut head)).await {
            Ok(Ok(n)) => n,
            _ => return Err(ProxyError::Incomplete),
        };
        let head = head.get(..n).unwrap_or(&[]);
        let v2 = head.first() == Some(&b'\r');
        let v1 = n == 5 && head == b"PROXY";
        if n == 0 {
            Err(ProxyError::Incomplete)
        } else if v1 || v2 {
            Err(ProxyError::NotAllowed(peer.ip()))
        } else {
            Ok(peer)
        }
    }
}

/// Reads exactly one v2 header (16 fixed bytes plus its length) off the
/// stream, leaving what follows untouched.
pub async fn read_header<S: AsyncRead + Unpin>(s: &mut S) -> Result<Header, ProxyError> {
    let mut fixed = [0u8; 16];
    s.read_exact(&mut fixed)
        .await
        .map_err(|_| ProxyError::Incomplete)?;
    let len = check_fixed(&fixed)?;
    let mut block = vec![0u8; len];
    s.read_exact(&mut block)
        .await
        .map_err(|_| ProxyError::Incomplete)?;
    parse(&fixed, &block)
}

/// Parses a header held in one buffer (as a test or a datagram would
/// have it); returns the header and how many bytes it took.
pub fn parse_buf(buf: &[u8]) -> Result<(Header, usize), ProxyError> {
    let fixed: [u8; 16] = buf
        .get(..16)
        .and_then(|b| b.try_into().ok())
        .ok_or(ProxyError::Incomplete)?;
    let len = check_fixed(&fixed)?;
    let block = buf.get(16..16 + len).ok_or(ProxyError::Incomplete)?;
    Ok((parse(&fixed, block)?, 16 + len))
}

/// Checks signature, version and command; returns the block length.
fn check_fixed(fixed: &[u8; 16]) -> Result<usize, ProxyError> {
    let (sig, rest) = fixed.split_at(12);
    if sig != SIGNATURE {
        return Err(ProxyError::Malformed("no v2 signature"));
    }
    let [ver_cmd, _fam, hi, lo] = [rest[0], rest[1], rest[2], rest[3]];
    if ver_cmd >> 4 != 2 {
        return Err(ProxyError::Malformed("version is not 2"));
    }
    if ver_cmd & 0x0f > 1 {
        return Err(ProxyError::Malformed("unknown command"));
    }
    let len = u16::from_be_bytes([hi, lo]) as usize;
    if len > MAX_BLOCK {
        return Err(ProxyError::Malformed("header too long"));
    }
    Ok(len)
}

fn parse(fixed: &[u8; 16], block: &[u8]) -> Result<Header, ProxyError> {
    let cmd = fixed[12] & 0x0f;
    let fam = fixed[13];
    if cmd == 0 {
        return Ok(Header::Local);
    }
    // 0x11 TCP over IPv4, 0x21 TCP over IPv6 (§2.2); the address block
    // may be followed by TLVs, which carry nothing we use.
    match fam {
        0x11 => {
            let b = block
                .get(..12)
                .ok_or(ProxyError::Malformed("short IPv4 block"))?;
            let src = Ipv4Addr::new(b[0], b[1], b[2], b[3]);
            let port = u16::from_be_bytes([b[8], b[9]]);
            Ok(Header::Proxied(SocketAddr::from((src, port))))
        }
        0x21 => {
            let b = block
                .get(..36)
                .ok_or(ProxyError::Malformed("short IPv6 block"))?;
            let mut src = [0u8; 16];
            src.copy_from_slice(&b[..16]);
            let port = u16::from_be_bytes([b[32], b[33]]);
            Ok(Header::Proxied(SocketAddr::from((
                Ipv6Addr::from(src),
                port,
            ))))
        }
        _ => Ok(Header::Local),
    }
}

/// Builds a v2 PROXY header for `src` → `dst` (tests, and anyone writing
/// a client).
pub fn encode(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let mut h = SIGNATURE.to_vec();
    h.push(0x21);
    match (src, dst) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => {
            h.push(0x11);
            h.extend_from_slice(&12u16.to_be_bytes());
            h.extend_from_slice(&s.ip().octets());
            h.extend_from_slice(&d.ip().octets());
            h.extend_from_slice(&s.port().to_be_bytes());
            h.extend_from_slice(&d.port().to_be_bytes());
        }
        (s, d) => {
            let v6 = |a: SocketAddr| match a.ip() {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => v6,
            };
            h.push(0x21);
            h.extend_from_slice(&36u16.to_be_bytes());
            h.extend_from_slice(&v6(s).octets());
            h.extend_from_slice(&v6(d).octets());
            h.extend_from_slice(&s.port().to_be_bytes());
            h.extend_from_slice(&d.port().to_be_bytes());
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_and_ipv6_headers_round_trip() {
        let d: SocketAddr = "127.0.0.1:853".parse().unwrap();
        for src in ["192.0.2.7:4242", "[2001:db8::7]:4242"] {
            let src: SocketAddr = src.parse().unwrap();
            let mut h = encode(src, d);
            let len = h.len();
            h.extend_from_slice(b"rest");
            assert_eq!(parse_buf(&h), Ok((Header::Proxied(src), len)));
        }
    }

    #[test]
    fn local_command_and_unknown_families_use_the_real_peer() {
        let mut h = SIGNATURE.to_vec();
        h.extend_from_slice(&[0x20, 0x00, 0, 0]);
        assert_eq!(parse_buf(&h), Ok((Header::Local, 16)));
        let mut h = SIGNATURE.to_vec();
        h.extend_from_slice(&[0x21, 0x31, 0, 4, 1, 2, 3, 4]);
        assert_eq!(parse_buf(&h), Ok((Header::Local, 20)));
    }

    #[test]
    fn bad_headers_are_errors() {
        let d: SocketAddr = "127.0.0.1:853".parse().unwrap();
        let good = encode("192.0.2.7:1".parse().unwrap(), d);
        let mut v1 = good.clone();
        v1[12] = 0x11;
        assert!(matches!(parse_buf(&v1), Err(ProxyError::Malformed(_))));
        let mut short = good.clone();
        short[15] = 4;
        assert!(matches!(parse_buf(&short), Err(ProxyError::Malformed(_))));
        let mut long = good.clone();
        long[14] = 0xff;
        assert!(matches!(parse_buf(&long), Err(ProxyError::Malformed(_))));
        for n in 0..good.len() {
            assert!(parse_buf(&good[..n]).is_err(), "prefix {n}");
        }
    }

    #[test]
    fn random_bytes_after_the_signature_never_panic() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        for _ in 0..20_000 {
            let mut h = SIGNATURE.to_vec();
            let n = rng.gen_range(0..80);
            h.extend((0..n).map(|_| rng.gen::<u8>()));
            let _ = parse_buf(&h);
        }
    }

    #[test]
    fn mapped_ipv6_peers_match_ipv4_prefixes() {
        let p = ProxyPolicy::new(vec!["10.0.0.0/8".parse().unwrap()]);
        assert!(p.trusts("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!p.trusts("11.0.0.1".parse().unwrap()));
    }
}
