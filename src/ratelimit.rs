//! Rate limits for UDP clients: response rate limiting against reflection
//! attacks (RRL, as BIND's and Knot's: per source prefix, with "slip":
//! every n-th limited response goes out truncated, TC=1, so a real client
//! behind a forged-upon address retries over TCP and is still served), and
//! a per-address query rate limit for clients that flood.
//!
//! TCP needs a real handshake, so it proves the source address and is
//! never limited; nor are queries with a valid server cookie (RFC 7873
//! §5.2.4 makes the same argument). Both limits are off by default.
//!
//! Each limit is a fixed table of per-second counters indexed by a keyed
//! hash of the prefix or address: one atomic compare-and-swap per packet,
//! no lock, no allocation, bounded memory whatever the number of sources.
//! Colliding sources share a counter, which can only limit them sooner.

use crate::config::RateLimitConfig;
use ipnet::IpNet;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

/// Counters per table (a power of two).
const SLOTS: usize = 1 << 16;

/// What to do with a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Send it.
    Send,
    /// Send it truncated (TC=1, no records).
    Slip,
    /// Send nothing.
    Drop,
}

/// Per-second counters keyed by a hash.
struct Table {
    slots: Box<[AtomicU64]>,
    hasher: ahash::RandomState,
}

impl Table {
    fn new() -> Table {
        Table {
            slots: (0..SLOTS).map(|_| AtomicU64::new(0)).collect(),
            hasher: ahash::RandomState::new(),
        }
    }

    /// Counts one event for `key` in second `now` and returns the count so
    /// far in that second.
    fn count(&self, key: &[u8], now: u32) -> u32 {
        let i = (self.hasher.hash_one(key) as usize) & (SLOTS - 1);
        let Some(slot) = self.slots.get(i) else {
            return 0;
        };
        let mut old = slot.load(Relaxed);
        loop {
            let (second, n) = ((old >> 32) as u32, old as u32);
            let n = if second == now {
                n.saturating_add(1)
            } else {
                1
            };
            let new = (u64::from(now) << 32) | u64::from(n);
            match slot.compare_exchange_weak(old, new, Relaxed, Relaxed) {
                Ok(_) => return n,
                Err(seen) => old = seen,
            }
        }
    }
}

/// The configured limits.
pub struct RateLimits {
    responses: Option<(Table, u32)>,
    queries: Option<(Table, u32)>,
    slip: u32,
    v4_prefix: u8,
    v6_prefix: u8,
    exempt: Vec<IpNet>,
    started: Instant,
}

impl RateLimits {
    /// Limits as configured; both tables exist only when their rate is set.
    pub fn new(cfg: &RateLimitConfig) -> RateLimits {
        let table = |rate: u32| (rate > 0).then(|| (Table::new(), rate));
        RateLimits {
            responses: table(cfg.responses_per_second),
            queries: table(cfg.queries_per_second),
            slip: cfg.slip,
            v4_prefix: cfg.ipv4_prefix_length,
            v6_prefix: cfg.ipv6_prefix_length,
            exempt: cfg.exempt.clone(),
            started: Instant::now(),
        }
    }

    /// Whether any limit is on (the query path skips everything if not).
    pub fn enabled(&self) -> bool {
        self.responses.is_some() || self.queries.is_some()
    }

    fn second(&self) -> u32 {
        self.started.elapsed().as_secs() as u32
    }

    fn exempt(&self, ip: IpAddr) -> bool {
        self.exempt.iter().any(|n| n.contains(&ip))
    }

    /// Whether a UDP query from `ip` may be processed at all.
    pub fn admit_query(&self, ip: IpAddr) -> bool {
        let Some((table, rate)) = &self.queries else {
            return true;
        };
        if self.exempt(ip) {
            return true;
        }
        let (bytes, len) = address_bytes(ip, 128);
        table.count(bytes.get(..len).unwrap_or(&[]), self.second()) <= *rate
    }

    /// What to do with a UDP response to `ip`.
    pub fn response(&self, ip: IpAddr) -> Decision {
        let Some((table, rate)) = &self.responses else {
            return Decision::Send;
        };
        if self.exempt(ip) {
            return Decision::Send;
        }
        let prefix = match ip {
            IpAddr::V4(_) => self.v4_prefix,
            IpAddr::V6(_) => self.v6_prefix,
        };
        let (bytes, len) = address_bytes(ip, prefix);
        let n = table.count(bytes.get(..len).unwrap_or(&[]), self.second());
        if n <= *rate {
            return Decision::Send;
        }
        if self.slip > 0 && (n - rate) % self.slip == 0 {
            Decision::Slip
        } else {
            Decision::Drop
        }
    }
}

/// The first `prefix` bits of `ip` (the rest zeroed) and a family marker,
/// as a key: v4 and v6 prefixes never share a counter by construction.
fn address_bytes(ip: IpAddr, prefix: u8) -> ([u8; 18], usize) {
    let mut out = [0u8; 18];
    let (family, octets, bits): (u8, &[u8], u8) = match &ip {
        IpAddr::V4(a) => (4, &a.octets()[..], prefix.min(32)),
        IpAddr::V6(a) => (6, &a.octets()[..], prefix.min(128)),
    };
    out[0] = family;
    out[1] = bits;
    for (i, b) in octets.iter().enumerate() {
        let keep = (bits as usize).saturating_sub(i * 8).min(8);
        let mask = if keep == 0 { 0 } else { 0xffu8 << (8 - keep) };
        if let Some(slot) = out.get_mut(2 + i) {
            *slot = b & mask;
        }
    }
    (out, 2 + octets.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(rps: u32, qps: u32, slip: u32) -> RateLimits {
        RateLimits::new(&RateLimitConfig {
            responses_per_second: rps,
            queries_per_second: qps,
            slip,
            ..RateLimitConfig::default()
        })
    }

    #[test]
    fn responses_beyond_the_rate_slip_every_nth_and_drop_the_rest() {
        let rl = limits(5, 0, 2);
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let got: Vec<Decision> = (0..9).map(|_| rl.response(ip)).collect();
        use Decision::*;
        assert_eq!(
            got,
            vec![Send, Send, Send, Send, Send, Drop, Slip, Drop, Slip]
        );
    }

    #[test]
    fn a_prefix_shares_one_budget_and_others_have_their_own() {
        let rl = limits(3, 0, 0);
        let a: IpAddr = "198.51.100.1".parse().unwrap();
        let b: IpAddr = "198.51.100.200".parse().unwrap();
        let c: IpAddr = "203.0.113.1".parse().unwrap();
        for _ in 0..3 {
            assert_eq!(rl.response(a), Decision::Send);
        }
        assert_eq!(rl.response(b), Decision::Drop, "same /24");
        assert_eq!(rl.response(c), Decision::Send, "another /24");
    }

    #[test]
    fn query_limit_is_per_address_and_exempt_prefixes_pass() {
        let mut rl = limits(0, 2, 2);
        let a: IpAddr = "2001:db8::1".parse().unwrap();
        let b: IpAddr = "2001:db8::2".parse().unwrap();
        assert!(rl.admit_query(a) && rl.admit_query(a));
        assert!(!rl.admit_query(a));
        assert!(rl.admit_query(b));
        rl.exempt = vec!["2001:db8::/64".parse().unwrap()];
        assert!(rl.admit_query(a));
    }

    #[test]
    fn prefix_bytes_zero_the_host_part() {
        let (k, n) = address_bytes("10.1.2.3".parse().unwrap(), 24);
        assert_eq!(&k[..n], &[4, 24, 10, 1, 2, 0]);
        let (k, n) = address_bytes("2001:db8:1:2:3::1".parse().unwrap(), 56);
        assert_eq!(
            &k[2..n],
            &[0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        );
    }
}
