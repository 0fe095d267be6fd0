//! DNS Cookies, server side (RFC 7873 §5.2) with the interoperable server
//! cookie of RFC 9018 §4: Version 1, three reserved bytes, a timestamp and
//! SipHash-2-4 over the client cookie, those eight bytes and the client's
//! address, keyed by the server secret. Instances of a fleet that share
//! `[server] cookie_secret` accept each other's cookies.
//!
//! A cookie is valid from 5 minutes in the future (clock skew) to an hour
//! in the past (RFC 9018 §4.3); one older than half an hour is replaced in
//! the reply. Validity only matters for rate limiting and BADCOOKIE; the
//! answer itself never depends on it.

use siphasher::sip::SipHasher24;
use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

/// Client cookie length (RFC 7873 §4.1).
pub const CLIENT_LEN: usize = 8;
/// Our server cookie length (RFC 9018 §4).
pub const SERVER_LEN: usize = 16;
/// An option's data as we send it: client cookie, then our server cookie.
pub type ReplyCookie = [u8; CLIENT_LEN + SERVER_LEN];

/// What the query's COOKIE option says, once checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Only a client cookie: a first contact.
    ClientOnly,
    /// A server cookie we issued to this client, still fresh.
    Valid,
    /// A server cookie that is not ours, is expired, or is for another
    /// client address.
    Invalid,
}

/// The server secret and the clock.
pub struct CookieJar {
    secret: [u8; 16],
}

impl CookieJar {
    /// A jar with `secret`, or a random one when `None` (cookies then
    /// survive only as long as the process).
    pub fn new(secret: Option<[u8; 16]>) -> CookieJar {
        CookieJar {
            secret: secret.unwrap_or_else(rand::random),
        }
    }

    /// Checks the cookie of a query from `client` and returns the verdict
    /// with the cookie option data for the reply. `server` is the server
    /// cookie as received (empty when there was none).
    pub fn check(
        &self,
        client_cookie: &[u8; CLIENT_LEN],
        server: &[u8],
        client: IpAddr,
    ) -> (Verdict, ReplyCookie) {
        self.check_at(client_cookie, server, client, now_secs())
    }

    fn check_at(
        &self,
        client_cookie: &[u8; CLIENT_LEN],
        server: &[u8],
        client: IpAddr,
        now: u32,
    ) -> (Verdict, ReplyCookie) {
        let mut reply = [0u8; CLIENT_LEN + SERVER_LEN];
        reply[..CLIENT_LEN].copy_from_slice(client_cookie);
        let verdict = if server.is_empty() {
            Verdict::ClientOnly
        } else {
            match self.timestamp_if_valid(client_cookie, server, client, now) {
                Some(stamp) if now.wrapping_sub(stamp) < REFRESH_AFTER => {
                    // Still young: echo it unchanged (RFC 9018 §4.3).
                    reply[CLIENT_LEN..].copy_from_slice(server);
                    return (Verdict::Valid, reply);
                }
                Some(_) => Verdict::Valid,
                None => Verdict::Invalid,
            }
        };
        let fresh = self.server_cookie(client_cookie, client, now);
        reply[CLIENT_LEN..].copy_from_slice(&fresh);
        (verdict, reply)
    }

    /// RFC 9018 §4.2.
    fn server_cookie(
        &self,
        client_cookie: &[u8; CLIENT_LEN],
        client: IpAddr,
        now: u32,
    ) -> [u8; SERVER_LEN] {
        let mut out = [0u8; SERVER_LEN];
        out[0] = 1;
        out[4..8].copy_from_slice(&now.to_be_bytes());
        let hash = self.hash(client_cookie, &out[..8], client);
        out[8..].copy_from_slice(&hash);
        out
    }

    fn hash(&self, client_cookie: &[u8], head: &[u8], client: IpAddr) -> [u8; 8] {
        // Client cookie, version + reserved + timestamp, client address.
        let mut input = [0u8; CLIENT_LEN + 8 + 16];
        input[..CLIENT_LEN].copy_from_slice(client_cookie);
        input[CLIENT_LEN..CLIENT_LEN + 8].copy_from_slice(head);
        let len = match client {
            IpAddr::V4(a) => {
                input[16..20].copy_from_slice(&a.octets());
                20
            }
            IpAddr::V6(a) => {
                input[16..32].copy_from_slice(&a.octets());
                32
            }
        };
        SipHasher24::new_with_key(&self.secret)
            .hash(&input[..len])
            .to_le_bytes()
    }

    fn timestamp_if_valid(
        &self,
        client_cookie: &[u8; CLIENT_LEN],
        server: &[u8],
        client: IpAddr,
        now: u32,
    ) -> Option<u32> {
        if server.len() != SERVER_LEN || server.first() != Some(&1) {
            return None;
        }
        let head = server.get(..8)?;
        let stamp = u32::from_be_bytes(head.get(4..8)?.try_into().ok()?);
        // Serial-number arithmetic (RFC 1982): at most an hour old, at
        // most five minutes ahead.
        let age = now.wrapping_sub(stamp);
        if age > MAX_AGE && stamp.wrapping_sub(now) > MAX_SKEW {
            return None;
        }
        let want = self.hash(client_cookie, head, client);
        // Not a secret comparison worth a constant-time routine: a forger
        // learns nothing he could not get by asking for a cookie.
        (server.get(8..) == Some(&want[..])).then_some(stamp)
    }
}

const MAX_AGE: u32 = 3600;
const MAX_SKEW: u32 = 300;
const REFRESH_AFTER: u32 = 1800;

fn now_secs() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(0)
}

/// Parses `cookie_secret`: 32 hexadecimal digits.
pub fn parse_secret(text: &str) -> Result<[u8; 16], String> {
    let text = text.trim();
    if text.len() != 32 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("must be 32 hexadecimal digits (16 bytes)".into());
    }
    let mut out = [0u8; 16];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2).unwrap_or("00"), 16)
            .map_err(|e| e.to_string())?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn rfc9018_appendix_a1_vector() {
        // RFC 9018 A.1: a learning client, IPv4.
        let jar = CookieJar::new(Some(
            parse_secret("e5e973e5a6b2a43f48e7dc849e37bfcf").unwrap(),
        ));
        let client: [u8; 8] = hex("2464c4abcf10c957").try_into().unwrap();
        let ip: IpAddr = "198.51.100.100".parse().unwrap();
        let cookie = jar.server_cookie(&client, ip, 1559731985);
        assert_eq!(cookie.to_vec(), hex("010000005cf79f111f8130c3eee29480"));
    }

    #[test]
    fn issued_cookie_is_valid_for_its_client_only() {
        let jar = CookieJar::new(None);
        let cc = [7u8; 8];
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let (v, reply) = jar.check_at(&cc, &[], ip, 1_000_000);
        assert_eq!(v, Verdict::ClientOnly);
        let server = &reply[8..];
        assert_eq!(jar.check_at(&cc, server, ip, 1_000_010).0, Verdict::Valid);
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        assert_eq!(
            jar.check_at(&cc, server, other, 1_000_010).0,
            Verdict::Invalid
        );
        assert_eq!(
            jar.check_at(&[8; 8], server, ip, 1_000_010).0,
            Verdict::Invalid
        );
        // An hour and a bit later it has expired; too far ahead is invalid.
        assert_eq!(jar.check_at(&cc, server, ip, 1_003_700).0, Verdict::Invalid);
        assert_eq!(jar.check_at(&cc, server, ip, 999_000).0, Verdict::Invalid);
        assert_eq!(
            jar.check_at(&cc, &server[..12], ip, 1_000_010).0,
            Verdict::Invalid
        );
    }

    #[test]
    fn old_but_valid_cookie_is_replaced() {
        let jar = CookieJar::new(None);
        let cc = [1u8; 8];
        let ip: IpAddr = "2001:db8::1".parse().unwrap();
        let (_, first) = jar.check_at(&cc, &[], ip, 5000);
        let (v, young) = jar.check_at(&cc, &first[8..], ip, 5100);
        assert_eq!((v, young), (Verdict::Valid, first));
        let (v, renewed) = jar.check_at(&cc, &first[8..], ip, 5000 + 2000);
        assert_eq!(v, Verdict::Valid);
        assert_ne!(renewed, first);
    }
}
