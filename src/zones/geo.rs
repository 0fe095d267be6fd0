//! Client regions: `[geo.regions]` prefixes (longest-prefix match) and an
//! optional MaxMind DB consulted when no prefix matched.
//!
//! The prefix table is one sorted vector per prefix length, searched from the
//! longest length down: at most one binary search per distinct length, no
//! allocation, so it is cheap enough for every query.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use maxminddb::geoip2;

/// A region, interned: an index into [`Geo::names`]. Cheap to copy and compare
/// on the query path, where names would cost string comparisons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Region(u16);

/// The result of locating one client address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GeoMatch {
    /// The client's region, if it is one that some pool or prefix names.
    pub(crate) region: Option<Region>,
    /// Length of the prefix that decided (region table or MaxMind network);
    /// the ECS scope is derived from it.
    pub(crate) prefix_len: Option<u8>,
}

/// Prefixes of one length, sorted by network bits for binary search.
#[derive(Debug, Default)]
struct LenBucket<T> {
    len: u8,
    nets: Vec<(T, Region)>,
}

/// Longest-prefix-match table for one address family.
#[derive(Debug, Default)]
struct PrefixTable<T> {
    /// Buckets ordered by descending prefix length: the first hit is the longest.
    buckets: Vec<LenBucket<T>>,
}

trait Bits: Copy + Ord {
    const WIDTH: u8;
    fn mask(self, len: u8) -> Self;
}

impl Bits for u32 {
    const WIDTH: u8 = 32;
    fn mask(self, len: u8) -> Self {
        // `checked_shl` because a shift by the full width would overflow (len 0).
        self & u32::MAX
            .checked_shl(u32::from(32 - len.min(32)))
            .unwrap_or(0)
    }
}

impl Bits for u128 {
    const WIDTH: u8 = 128;
    fn mask(self, len: u8) -> Self {
        self & u128::MAX
            .checked_shl(u32::from(128 - len.min(128)))
            .unwrap_or(0)
    }
}

impl<T: Bits> PrefixTable<T> {
    fn insert(&mut self, net: T, len: u8, region: Region) {
        let len = len.min(T::WIDTH);
        let pos = match self.buckets.binary_search_by(|b| len.cmp(&b.len)) {
            Ok(pos) => pos,
            Err(pos) => {
                self.buckets.insert(
                    pos,
                    LenBucket {
                        len,
                        nets: Vec::new(),
                    },
                );
                pos
            }
        };
        if let Some(bucket) = self.buckets.get_mut(pos) {
            bucket.nets.push((net.mask(len), region));
            bucket.nets.sort_by_key(|(n, _)| *n);
        }
    }

    /// Longest prefix containing `addr`, considering only the first
    /// `max_len` bits of it (the ECS source prefix; `WIDTH` otherwise).
    fn lookup(&self, addr: T, max_len: u8) -> Option<(Region, u8)> {
        let addr = addr.mask(max_len);
        self.buckets.iter().find_map(|b| {
            let key = addr.mask(b.len);
            b.nets
                .binary_search_by_key(&key, |(n, _)| *n)
                .ok()
                .and_then(|i| b.nets.get(i))
                .map(|(_, r)| (*r, b.len))
        })
    }
}

/// Region names, the prefix tables and the optional MaxMind reader.
pub(crate) struct Geo {
    names: Vec<String>,
    index: HashMap<String, Region>,
    v4: PrefixTable<u32>,
    v6: PrefixTable<u128>,
    mmdb: Option<maxminddb::Reader<Vec<u8>>>,
}

impl fmt::Debug for Geo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Geo")
            .field("names", &self.names)
            .field("v4", &self.v4)
            .field("v6", &self.v6)
            .field("mmdb", &self.mmdb.is_some())
            .finish()
    }
}

/// Why a prefix could not be added; the caller turns it into a `ZonesError`.
#[derive(Debug)]
pub(crate) enum PrefixError {
    Syntax(String),
    HostBits(IpNet),
    Duplicate(String),
}

impl Geo {
    pub(crate) fn new() -> Self {
        Geo {
            names: Vec::new(),
            index: HashMap::new(),
            v4: PrefixTable::default(),
            v6: PrefixTable::default(),
            mmdb: None,
        }
    }

    pub(crate) fn set_mmdb(&mut self, reader: maxminddb::Reader<Vec<u8>>) {
        self.mmdb = Some(reader);
    }

    pub(crate) fn has_mmdb(&self) -> bool {
        self.mmdb.is_some()
    }

    /// Interns a region name (idempotent).
    pub(crate) fn intern(&mut self, name: &str) -> Region {
        if let Some(r) = self.index.get(name) {
            return *r;
        }
        // More than 65535 regions is not a realistic configuration; saturate
        // rather than panic (they would share an id, which only merges them).
        let r = Region(u16::try_from(self.names.len()).unwrap_or(u16::MAX));
        self.names.push(name.to_string());
        self.index.insert(name.to_string(), r);
        r
    }

    pub(crate) fn region(&self, name: &str) -> Option<Region> {
        self.index.get(name).copied()
    }

    /// All region names, for error messages.
    pub(crate) fn names(&self) -> &[String] {
        &self.names
    }

    pub(crate) fn name(&self, region: Region) -> &str {
        self.names
            .get(usize::from(region.0))
            .map(String::as_str)
            .unwrap_or("?")
    }

    /// Adds `cidr` to `region`. Host bits must be clear (a typo guard: "10.1.2.3/16"
    /// is more likely a mistake than a way to write 10.1.0.0/16), and a prefix
    /// may belong to one region only.
    pub(crate) fn add_prefix(&mut self, region: Region, cidr: &str) -> Result<(), PrefixError> {
        let net: IpNet = cidr
            .trim()
            .parse()
            .map_err(|e: ipnet::AddrParseError| PrefixError::Syntax(e.to_string()))?;
        if net.trunc() != net {
            return Err(PrefixError::HostBits(net));
        }
        let existing = match net {
            IpNet::V4(n) => self.v4.lookup(u32::from(n.network()), n.prefix_len()),
            IpNet::V6(n) => self.v6.lookup(u128::from(n.network()), n.prefix_len()),
        };
        if let Some((other, len)) = existing {
            if len == net.prefix_len() {
                return Err(PrefixError::Duplicate(self.name(other).to_string()));
            }
        }
        match net {
            IpNet::V4(n) => self
                .v4
                .insert(u32::from(n.network()), n.prefix_len(), region),
            IpNet::V6(n) => self
                .v6
                .insert(u128::from(n.network()), n.prefix_len(), region),
        }
        Ok(())
    }

    /// Locates `addr`, of which only the first `source_prefix` bits are
    /// meaningful (the ECS source prefix; `None` = the whole address).
    pub(crate) fn locate(&self, addr: IpAddr, source_prefix: Option<u8>) -> GeoMatch {
        // Dual-stack sockets report IPv4 clients as ::ffff:a.b.c.d.
        let (addr, source_prefix) = match addr {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => (IpAddr::V4(v4), source_prefix.map(|p| p.saturating_sub(96))),
                None => (addr, source_prefix),
            },
            v4 => (v4, source_prefix),
        };
        let hit = match addr {
            IpAddr::V4(a) => self.v4.lookup(u32::from(a), source_prefix.unwrap_or(32)),
            IpAddr::V6(a) => self.v6.lookup(u128::from(a), source_prefix.unwrap_or(128)),
        };
        if let Some((region, len)) = hit {
            return GeoMatch {
                region: Some(region),
                prefix_len: Some(len),
            };
        }
        self.locate_mmdb(addr).unwrap_or(GeoMatch {
            region: None,
            prefix_len: None,
        })
    }

    fn locate_mmdb(&self, addr: IpAddr) -> Option<GeoMatch> {
        let reader = self.mmdb.as_ref()?;
        // A Country record also deserialises from a City DB (extra fields ignored).
        let (record, len) = reader.lookup_prefix::<geoip2::Country>(addr).ok()?;
        let code = record.country.and_then(|c| c.iso_code)?;
        Some(GeoMatch {
            region: self.region(code),
            prefix_len: u8::try_from(len).ok(),
        })
    }
}

/// Region names that may be used without a `[geo.regions]` entry when an
/// mmdb is configured: ISO 3166-1 alpha-2 codes as MaxMind reports them.
pub(crate) fn is_iso_country_code(name: &str) -> bool {
    name.len() == 2 && name.bytes().all(|b| b.is_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn geo() -> (Geo, Region, Region, Region) {
        let mut g = Geo::new();
        let eu = g.intern("eu");
        let us = g.intern("us");
        let lab = g.intern("lab");
        for (r, c) in [
            (eu, "10.1.0.0/16"),
            (us, "10.2.0.0/16"),
            (lab, "10.1.5.0/24"),
            (eu, "2001:db8:1::/48"),
            (us, "0.0.0.0/0"),
        ] {
            g.add_prefix(r, c).expect("prefix");
        }
        (g, eu, us, lab)
    }

    #[test]
    fn longest_prefix_wins_for_ipv4_and_ipv6() {
        let (g, eu, us, lab) = geo();
        assert_eq!(g.locate(ip("10.1.9.9"), None).region, Some(eu));
        assert_eq!(
            g.locate(ip("10.1.5.9"), None),
            GeoMatch {
                region: Some(lab),
                prefix_len: Some(24)
            }
        );
        assert_eq!(g.locate(ip("10.2.0.1"), None).prefix_len, Some(16));
        assert_eq!(
            g.locate(ip("192.0.2.1"), None),
            GeoMatch {
                region: Some(us),
                prefix_len: Some(0)
            }
        );
        assert_eq!(g.locate(ip("2001:db8:1::5"), None).region, Some(eu));
        assert_eq!(g.locate(ip("2001:db8:2::5"), None).region, None);
        assert_eq!(g.locate(ip("::ffff:10.1.5.1"), None).region, Some(lab));
    }

    #[test]
    fn source_prefix_hides_the_bits_the_client_did_not_send() {
        let (g, eu, _, _) = geo();
        // 10.1.5.0/16 only says "10.1": the /24 "lab" prefix cannot be decided.
        assert_eq!(g.locate(ip("10.1.5.0"), Some(16)).region, Some(eu));
    }

    #[test]
    fn bad_host_bits_and_duplicate_prefixes_are_rejected() {
        let (mut g, eu, _, _) = geo();
        assert!(matches!(
            g.add_prefix(eu, "10.1.2.3/16"),
            Err(PrefixError::HostBits(_))
        ));
        assert!(
            matches!(g.add_prefix(eu, "10.2.0.0/16"), Err(PrefixError::Duplicate(n)) if n == "us")
        );
        assert!(matches!(
            g.add_prefix(eu, "10.300.0.0/16"),
            Err(PrefixError::Syntax(_))
        ));
    }
}
