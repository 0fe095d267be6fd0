//! Local authoritative zones: static records, weighted pools, geo views and
//! health checks.
//!
//! The resolver asks [`LocalZones::lookup`] first for every query. A query
//! at or below a configured origin is answered here, authoritatively, and
//! never recursed; anything else gets `None` and goes on to the cache and the
//! iterator. This module owns the `[geo]` and `[[zone]]` configuration, zone
//! files, pool selection and the TCP probes; it does not own wire encoding,
//! EDNS parsing (the caller hands in the ECS option already parsed) or the
//! AA bit (the caller sets it).
//!
//! Prior art followed:
//! - RFC 1034 §4.3.2 lookup (no delegation: NS below the apex is plain data),
//!   in-zone CNAME chasing, NXDOMAIN/NODATA with the SOA in the authority
//!   section (RFC 2308 §3, TTL = min(SOA TTL, MINIMUM)); empty non-terminals
//!   are NODATA.
//! - RFC 4592 wildcards: `*.<closest encloser>` synthesises for names that do
//!   not exist; existing names (empty non-terminals included) block it.
//! - RFC 7871 client subnet: the region is located from the ECS address
//!   (first SOURCE PREFIX-LENGTH bits only) when present, else from the
//!   packet's source; SCOPE PREFIX-LENGTH = the length of the prefix that
//!   decided, capped at the source prefix.
//! - Route 53 weighted and geolocation routing: weight ∝ share, weight 0 =
//!   standby, region → global → fallback, fail open when all are down.
//!
//! Decisions (where the brief left a choice):
//! - Members without `region` are *global*: a client whose region has no
//!   healthy member gets the healthy global members, and only then the
//!   pool's `fallback` ("all" healthy members, or a named region's).
//! - Standby (weight 0) is per candidate set: a region's standby is served
//!   before falling back to other regions.
//! - All weights 0 is allowed: every member is a standby, drawn uniformly.
//! - All members down: fail open (answer as if all were healthy) rather
//!   than SERVFAIL; a maybe-dead address beats no address.
//! - `health` on a CNAME pool is a validation error (a name is not probed).
//!   A CNAME pool must have `answers = 1` (RFC 2181 §10.1).
//! - Pools are unique per (name, type): an A and an AAAA pool may share a
//!   name (dual stack); a CNAME pool must be alone at its name.
//! - Region names are matched exactly. With `[geo] mmdb`, two-letter
//!   upper-case ISO country codes are valid region names without a
//!   `[geo.regions]` entry. "all" is reserved and cannot name a region.
//! - `ecs_scope` is `Some` only for answers from a pool with regional
//!   members when the query carried ECS; otherwise the answer did not depend
//!   on the address and the caller should echo scope 0.
//! - Pool CNAME targets and pool names are relative to the origin unless
//!   they end with a dot, like zone-file names.

mod build;
pub mod config;
mod geo;
mod health;
mod pool;
pub mod special;
mod zone;

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{Name, Record, RecordType};
use rand::Rng;

pub use self::config::{GeoConfig, HealthConfig, MemberConfig, PoolConfig, ZoneConfig};
pub use self::health::HealthGuard;

use self::geo::{Geo, GeoMatch};
use self::pool::Pool;
use self::zone::Zone;

/// A configuration problem. Every message names the zone/pool/member and
/// the configuration key, so a user can find the line to fix.
#[derive(Debug, thiserror::Error)]
pub enum ZonesError {
    /// A value in `[geo]` or `[[zone]]` is invalid.
    #[error("{context}: {message} (key: {key})")]
    Invalid {
        /// Where: `zone "x." pool "api": member "192.0.2.1"`, `geo`, ...
        context: String,
        /// The configuration key, relative to the context (`members.value`).
        key: String,
        /// What is wrong.
        message: String,
    },
    /// A zone file could not be read, did not parse, or has out-of-zone data.
    #[error("zone \"{zone}\": file {}{}: {message} (key: file)", path.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
    ZoneFile {
        /// Zone origin as configured.
        zone: String,
        /// The file, as resolved against the base directory.
        path: PathBuf,
        /// 1-based line of the offending record, when known.
        line: Option<usize>,
        /// The parser's (or our) message.
        message: String,
    },
    /// One zone is at or below another: which would answer would be ambiguous.
    #[error("zone \"{inner}\" is at or under zone \"{outer}\": local zones must not overlap (key: origin)")]
    Overlap {
        /// The enclosing zone.
        outer: String,
        /// The zone at or below it.
        inner: String,
    },
    /// The MaxMind DB could not be opened.
    #[error("geo: mmdb {}: {message} (key: geo.mmdb)", path.display())]
    Mmdb {
        /// The file, as resolved against the base directory.
        path: PathBuf,
        /// The reader's message.
        message: String,
    },
}

/// What the caller knows about the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientInfo {
    /// Source address of the query packet.
    pub addr: IpAddr,
    /// The EDNS Client Subnet option, if the query had one.
    pub ecs: Option<ClientSubnet>,
}

/// The EDNS Client Subnet option (RFC 7871), parsed by the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientSubnet {
    /// ADDRESS; only the first `source_prefix` bits are used.
    pub addr: IpAddr,
    /// SOURCE PREFIX-LENGTH.
    pub source_prefix: u8,
}

/// An authoritative answer (the caller sets AA=1).
#[derive(Debug, Clone)]
pub struct ZoneAnswer {
    /// NOERROR (data or NODATA) or NXDOMAIN.
    pub rcode: ResponseCode,
    /// Answer section (CNAME chain first).
    pub answer: Vec<Record>,
    /// Authority section: the SOA on negative answers.
    pub authority: Vec<Record>,
    /// Additional section (currently always empty).
    pub additional: Vec<Record>,
    /// `Some(scope prefix length)` when the answer depended on the ECS address.
    pub ecs_scope: Option<u8>,
}

/// One pool member as `resolvd control pools` and the metrics show it.
#[derive(Debug, Clone)]
pub struct PoolMemberInfo {
    /// The pool's owner name.
    pub pool: String,
    /// The pool's record type (A, AAAA, CNAME).
    pub rtype: String,
    /// The member as configured.
    pub member: String,
    /// Its weight (0 = standby).
    pub weight: u64,
    /// Its region; None for a global member.
    pub region: Option<String>,
    /// Whether health checks (if any) hold it up.
    pub up: bool,
    /// Whether the pool has health checks at all.
    pub checked: bool,
    /// Answers it was drawn into since these zones were loaded.
    pub selections: u64,
}

/// All local zones plus the geo data their pools use. Immutable after
/// `from_config` except the members' health flags (atomics), so it is
/// shared as `Arc<LocalZones>` with no lock on the query path.
#[derive(Debug)]
pub struct LocalZones {
    /// Non-overlapping, so at most one contains a given name.
    zones: Vec<Zone>,
    /// Special-use zones (RFC 6761, RFC 6303), asked after `zones`: a
    /// configured zone below one of them answers for its own names.
    special: Vec<Zone>,
    /// Filter for the query path, so names that no zone can hold are
    /// turned away without decoding them (see [`LocalZones::may_contain`]).
    origins: OriginSet,
    geo: Geo,
}

/// The zone origins in lower-case wire form, and every proper suffix of
/// them ("arpa.", the root): walking a query name from its last label
/// towards its first, a suffix in neither set ends the search.
#[derive(Debug, Default)]
struct OriginSet {
    origins: HashSet<Box<[u8]>, ahash::RandomState>,
    ancestors: HashSet<Box<[u8]>, ahash::RandomState>,
}

impl OriginSet {
    fn new<'a>(origins: impl Iterator<Item = &'a Name>) -> OriginSet {
        let mut set = OriginSet::default();
        for o in origins {
            let mut wire = Vec::new();
            crate::wire::push_lower_wire(o, &mut wire);
            let mut at = 0;
            while let Some(&len) = wire.get(at) {
                if at > 0 || len == 0 {
                    set.ancestors.insert(wire.get(at..).unwrap_or(&[]).into());
                }
                if len == 0 {
                    break;
                }
                at += 1 + usize::from(len);
            }
            set.origins.insert(wire.into());
        }
        set
    }

    /// Whether the lower-cased, uncompressed wire name `name` is at or
    /// under an origin. Allocation-free: the query path calls it for every
    /// packet.
    fn covers(&self, name: &[u8]) -> bool {
        if self.origins.is_empty() {
            return false;
        }
        // Label starts; a wire name has at most 127 labels.
        let mut starts = [0u8; 128];
        let mut count = 0;
        let mut at = 0usize;
        while let Some(&len) = name.get(at) {
            if count == starts.len() || at > 255 {
                return false;
            }
            starts[count] = at as u8;
            count += 1;
            if len == 0 {
                break;
            }
            at += 1 + usize::from(len);
        }
        for &start in starts[..count].iter().rev() {
            let suffix = name.get(usize::from(start)..).unwrap_or(&[]);
            if self.origins.contains(suffix) {
                return true;
            }
            if !self.ancestors.contains(suffix) {
                return false;
            }
        }
        false
    }
}

impl LocalZones {
    /// Validates and builds everything (zone files relative to `base_dir`
    /// unless absolute). Returns ALL errors found, not just the first.
    pub fn from_config(
        zones: &[ZoneConfig],
        geo: &GeoConfig,
        base_dir: &Path,
    ) -> Result<LocalZones, Vec<ZonesError>> {
        build::build(zones, geo, base_dir)
    }

    /// Adds the special-use zones (RFC 6761, RFC 6303, RFC 7686, RFC 8375)
    /// except those at or under a name in `exclude`.
    pub fn with_special_use(mut self, exclude: &[Name]) -> LocalZones {
        let local: Vec<Name> = self.zones.iter().map(|z| z.origin.clone()).collect();
        self.special = special::zones(exclude, &local);
        self.origins = OriginSet::new(self.zones.iter().chain(&self.special).map(|z| &z.origin));
        self
    }

    /// True when no zone is configured (the caller can skip `lookup`).
    pub fn is_empty(&self) -> bool {
        self.zones.is_empty() && self.special.is_empty()
    }

    /// False when `name` (lower-cased wire form, as in a query key) is
    /// certainly outside every zone: the caller skips `lookup`, and its
    /// name decoding, for the names it resolves.
    pub fn may_contain(&self, name: &[u8]) -> bool {
        self.origins.covers(name)
    }

    /// `None` when `qname` is not at or under any local zone origin (then the
    /// caller recurses). Cheap for such names: a label comparison per zone.
    pub fn lookup(
        &self,
        qname: &Name,
        qtype: RecordType,
        client: &ClientInfo,
    ) -> Option<ZoneAnswer> {
        self.lookup_with_rng(qname, qtype, client, &mut rand::thread_rng())
    }

    /// `lookup` with the random source supplied (tests use a seeded one).
    pub(crate) fn lookup_with_rng<R: Rng + ?Sized>(
        &self,
        qname: &Name,
        qtype: RecordType,
        client: &ClientInfo,
        rng: &mut R,
    ) -> Option<ZoneAnswer> {
        let zone = self
            .zones
            .iter()
            .find(|z| z.contains(qname))
            .or_else(|| self.special.iter().find(|z| z.contains(qname)))?;
        // Locate the client at most once per query, and only if a geo pool asks.
        let mut located: Option<GeoMatch> = None;
        let mut ecs_scope: Option<u8> = None;
        let mut answer = {
            let mut select = |pool: &Pool, owner: &Name| -> Vec<Record> {
                let region = if pool.geo_aware {
                    let found = *located.get_or_insert_with(|| self.locate(client));
                    if let Some(ecs) = client.ecs {
                        ecs_scope = Some(
                            found
                                .prefix_len
                                .unwrap_or(ecs.source_prefix)
                                .min(ecs.source_prefix),
                        );
                    }
                    found.region
                } else {
                    None
                };
                let chosen = pool.select(region, rng);
                pool.records(&chosen, owner, zone.ttl)
            };
            zone.answer(qname, qtype, &mut select)
        };
        answer.ecs_scope = ecs_scope;
        Some(answer)
    }

    fn locate(&self, client: &ClientInfo) -> GeoMatch {
        match client.ecs {
            Some(ecs) => self.geo.locate(ecs.addr, Some(ecs.source_prefix)),
            None => self.geo.locate(client.addr, None),
        }
    }

    /// Every pool member of the configured zones, in configuration order.
    pub fn pool_members(&self) -> Vec<PoolMemberInfo> {
        use std::sync::atomic::Ordering::Relaxed;
        let mut v = Vec::new();
        for zone in &self.zones {
            for pool in &zone.pools {
                for m in &pool.members {
                    v.push(PoolMemberInfo {
                        pool: pool.name.to_string(),
                        rtype: pool.rtype.to_string(),
                        member: m.label.clone(),
                        weight: m.weight,
                        region: m.region.map(|r| self.geo.name(r).to_string()),
                        up: m.health.up.load(Relaxed),
                        checked: pool.health.is_some(),
                        selections: m.health.selected.load(Relaxed),
                    });
                }
            }
        }
        v
    }

    /// Spawns the background TCP health probes on the current tokio runtime;
    /// they stop when the returned guard (or the `LocalZones`) is dropped.
    /// Outside a runtime nothing is spawned (logged) and members stay up.
    pub fn start_health_checks(self: &Arc<Self>) -> HealthGuard {
        let mut guard = HealthGuard::default();
        if tokio::runtime::Handle::try_current().is_err() {
            tracing::error!(
                "zones: start_health_checks called outside a tokio runtime; no probes started"
            );
            return guard;
        }
        for zone in &self.zones {
            for pool in &zone.pools {
                let Some(spec) = pool.health else { continue };
                for member in &pool.members {
                    let Some(addr) = member.addr else { continue };
                    guard.push(health::spawn_probe(
                        format!("{}/{}", pool.name, member.label),
                        std::net::SocketAddr::new(addr, spec.tcp_port),
                        spec,
                        Arc::downgrade(&member.health),
                    ));
                }
            }
        }
        guard
    }
}

/// For `crate::fuzz`: parses zone-file text for a zone at `origin`.
pub(crate) fn parse_zone_text_for_fuzzing(
    origin: &Name,
    text: &str,
    path: &Path,
) -> Result<usize, ZonesError> {
    zone::parse_zone_text(&origin.to_string(), origin, 300, path, text).map(|r| r.len())
}

#[cfg(test)]
mod tests;
