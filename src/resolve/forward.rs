//! Forward and stub zones (`[[forward]]`): names at and below a configured
//! zone are sent to configured servers instead of being found from the
//! root.
//!
//! - Forward zone (`recursion = true`): the servers are resolvers. Queries
//!   carry RD=1 (RFC 1035 §4.1.1) and the full name (no QNAME
//!   minimisation: the forwarder walks for us); its answer, CNAME chain
//!   included, is taken as the answer.
//! - Stub zone (`recursion = false`): the servers are the zone's
//!   authoritative servers. Queries carry RD=0 and the walk starts at the
//!   zone as if the servers had come in a referral, so referrals below it
//!   are followed (Unbound's `stub-zone`).
//!
//! The longest matching zone wins (`corp.example.` before `.`); `zone =
//! "."` forwards everything. Servers are chosen by smoothed RTT and held
//! down when dead or lame, through the same [`ServerStats`] as
//! authoritative servers. When every server of a zone fails, the query
//! fails, or with `fallback = true` is resolved normally from the root.
//! With `tls`, a zone's queries go over DNS over TLS (RFC 7858, RFC 8310
//! strict profile) on one pipelined connection per server.
//!
//! [`ServerStats`]: super::servers::ServerStats

use super::classify::{classify, covered_type, follow_chain, is_denial, signatures_of, Outcome};
use super::iterate::{Budget, Iterator, ResolveError};
use super::store::Delegation;
use crate::metrics::Metrics;
use crate::transport::dot_client::{DotClient, DotClientConfig, DotError};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, Record, RecordType};
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Port of plain DNS forwarders when a server has none.
pub const DNS_PORT: u16 = 53;
/// Port of DNS over TLS forwarders when a server has none (RFC 7858 §3.1).
pub const DOT_PORT: u16 = 853;
/// Servers tried for one question, over both rounds (as for a zone's
/// authoritative servers in the walk).
const MAX_TRIES: usize = 8;
/// Shortest wait for a DoT exchange: the first one includes the TCP and
/// TLS handshakes, which an RTT estimate of plain queries does not cover.
const DOT_MIN_TIMEOUT: Duration = Duration::from_secs(1);

/// `[[forward]]`, as written in the configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardConfig {
    /// Names at and below this zone go to `servers`.
    pub zone: String,
    /// `"192.0.2.53"`, `"192.0.2.54:5353"`, `"2001:db8::53"` or
    /// `"[2001:db8::53]:5353"`; port 53 (853 with `tls`) when absent.
    pub servers: Vec<String>,
    /// True: the servers are resolvers (RD=1). False: they are the zone's
    /// authoritative servers (a stub zone, RD=0, referrals followed).
    #[serde(default = "default_true")]
    pub recursion: bool,
    /// When every server fails, resolve normally instead of failing.
    #[serde(default)]
    pub fallback: bool,
    /// Send this zone's queries over DNS over TLS.
    #[serde(default)]
    pub tls: Option<ForwardTls>,
}

fn default_true() -> bool {
    true
}

/// `tls = { name = "dns.example", ca = "FILE" }` of a `[[forward]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardTls {
    /// The name the servers' certificates must carry (RFC 8310 §8).
    pub name: String,
    /// PEM file of trusted CA certificates, relative to the config file;
    /// absent = the Mozilla roots (webpki-roots).
    #[serde(default)]
    pub ca: Option<PathBuf>,
}

/// Parses one `servers` entry: an address, or an address with a port.
pub fn parse_server(s: &str, default_port: u16) -> Result<SocketAddr, String> {
    let s = s.trim();
    if let Ok(a) = s.parse::<SocketAddr>() {
        if a.port() == 0 {
            return Err(format!("{s:?}: port 0"));
        }
        return Ok(a);
    }
    s.parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, default_port))
        .map_err(|_| format!("{s:?} is not an address or address:port"))
}

/// A zone name as configured (`"corp.example"` and `"corp.example."` are
/// the same zone), lower-cased.
pub fn parse_zone(s: &str) -> Result<Name, String> {
    let mut n = Name::from_ascii(s.trim()).map_err(|e| format!("{s:?} is not a zone name: {e}"))?;
    n.set_fqdn(true);
    Ok(n.to_lowercase())
}

/// What is wrong with a `[[forward]]` list: (index of the entry, key,
/// message), for `check-config` to locate.
pub fn check(list: &[ForwardConfig]) -> Vec<(usize, &'static str, String)> {
    let mut errs = Vec::new();
    let mut seen: Vec<Name> = Vec::new();
    for (i, f) in list.iter().enumerate() {
        match parse_zone(&f.zone) {
            Ok(z) if seen.contains(&z) => {
                errs.push((i, "zone", format!("{z} is listed twice in [[forward]]")))
            }
            Ok(z) => seen.push(z),
            Err(e) => errs.push((i, "zone", e)),
        }
        if f.servers.is_empty() {
            errs.push((i, "servers", "at least one server is needed".into()));
        }
        let port = if f.tls.is_some() { DOT_PORT } else { DNS_PORT };
        for s in &f.servers {
            if let Err(e) = parse_server(s, port) {
                errs.push((i, "servers", e));
            }
        }
        if let Some(t) = &f.tls {
            if rustls::pki_types::ServerName::try_from(t.name.as_str()).is_err() {
                errs.push((i, "tls", format!("{:?} is not a valid server name", t.name)));
            }
        }
    }
    errs
}

/// Why the forward zones could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// An entry that validation should have rejected.
    #[error("[[forward]] zone {zone:?}: {message}")]
    Invalid {
        /// The zone as written.
        zone: String,
        /// Why.
        message: String,
    },
    /// The TLS client could not be built (unreadable CA file).
    #[error("[[forward]] zone {zone:?}: {source}")]
    Tls {
        /// The zone as written.
        zone: String,
        /// Why.
        source: DotError,
    },
}

/// One server of a forward or stub zone.
pub struct ForwardServer {
    /// Address and port.
    pub addr: SocketAddr,
    /// The DoT client when the zone has `tls`: it owns the connection.
    dot: Option<DotClient>,
}

/// One `[[forward]]` entry, ready to use.
pub struct ForwardZone {
    /// The zone (lower case, absolute).
    pub zone: Name,
    /// Its servers, in configuration order.
    pub servers: Vec<ForwardServer>,
    /// Forwarders (RD=1) or a stub zone's authoritative servers (RD=0).
    pub recursion: bool,
    /// Resolve normally when every server fails.
    pub fallback: bool,
}

impl ForwardZone {
    /// The zone cut a stub zone's walk starts from: the servers are given
    /// by address, so no NS names.
    pub(super) fn delegation(&self) -> Delegation {
        Delegation {
            zone: self.zone.clone(),
            child_ns: Vec::new(),
            parent_ns: Vec::new(),
        }
    }
}

/// Every forward and stub zone, the deepest first.
#[derive(Default)]
pub struct ForwardZones {
    zones: Vec<ForwardZone>,
}

impl ForwardZones {
    /// Builds the zones of a validated configuration; CA paths are taken
    /// relative to `base_dir`. `timeout` bounds DoT connects and exchanges.
    pub fn build(
        list: &[ForwardConfig],
        base_dir: &Path,
        timeout: Duration,
    ) -> Result<ForwardZones, ForwardError> {
        let mut zones = Vec::with_capacity(list.len());
        for f in list {
            let invalid = |message: String| ForwardError::Invalid {
                zone: f.zone.clone(),
                message,
            };
            let zone = parse_zone(&f.zone).map_err(invalid)?;
            let port = if f.tls.is_some() { DOT_PORT } else { DNS_PORT };
            let mut servers = Vec::with_capacity(f.servers.len());
            for s in &f.servers {
                let addr = parse_server(s, port).map_err(invalid)?;
                let dot = match &f.tls {
                    None => None,
                    Some(t) => {
                        let mut c = DotClientConfig::new(addr, &t.name);
                        c.ca_file = t.ca.as_ref().map(|p| base_dir.join(p));
                        c.timeout = timeout;
                        Some(DotClient::new(c).map_err(|source| ForwardError::Tls {
                            zone: f.zone.clone(),
                            source,
                        })?)
                    }
                };
                servers.push(ForwardServer { addr, dot });
            }
            if servers.is_empty() {
                return Err(invalid("no servers".into()));
            }
            zones.push(ForwardZone {
                zone,
                servers,
                recursion: f.recursion,
                fallback: f.fallback,
            });
        }
        zones.sort_by_key(|z| std::cmp::Reverse(z.zone.num_labels()));
        Ok(ForwardZones { zones })
    }

    /// The deepest zone that `name` is at or below.
    pub fn find(&self, name: &Name) -> Option<&ForwardZone> {
        // Sorted deepest first, so the first match is the longest.
        self.zones.iter().find(|z| z.zone.zone_of(name))
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.zones.is_empty()
    }
}

impl Iterator {
    /// Asks the servers of `fz` (the best by RTT first, a second round
    /// for those that timed out) until one reply is usable: for forwarders
    /// an answer or a negative answer, for a stub zone anything the walk
    /// can use (a referral below included), classified against `cut`.
    pub(super) async fn ask_listed(
        &self,
        fz: &ForwardZone,
        cut: &Delegation,
        sname: &Name,
        stype: RecordType,
        budget: &Budget,
    ) -> Result<Outcome, ResolveError> {
        let by_rtt = self
            .servers
            .order_tiers(fz.servers.iter().map(|s| (0, s.addr.ip())), &fz.zone);
        // Back from addresses to servers (one address may listen on two
        // ports; they share its statistics).
        let order: Vec<&ForwardServer> = by_rtt
            .iter()
            .flat_map(|ip| fz.servers.iter().filter(move |s| s.addr.ip() == *ip))
            .collect();
        let mut given_up: Vec<SocketAddr> = Vec::new();
        let tries = (order.len() * 2).min(MAX_TRIES);
        for attempt in 0..tries {
            let Some(server) = order.get(attempt % order.len().max(1)) else {
                break;
            };
            let (addr, ip) = (server.addr, server.addr.ip());
            if given_up.contains(&addr) {
                continue;
            }
            budget.spend()?;
            Metrics::inc(&self.metrics.upstream_queries);
            let round = (attempt / order.len().max(1)) as u32;
            let t = self.servers.timeout(ip, round);
            let rd = fz.recursion;
            let reply = match &server.dot {
                Some(c) => {
                    let t = t.max(DOT_MIN_TIMEOUT);
                    self.upstream.exchange_dot(c, sname, stype, t, rd).await
                }
                None => self.upstream.exchange_at(addr, sname, stype, t, rd).await,
            };
            let reply = match reply {
                Ok(r) => r,
                Err(super::upstream::ExchangeError::Timeout) => {
                    self.servers.record_timeout(ip, t);
                    continue;
                }
                Err(e) => {
                    tracing::debug!(%addr, zone = %fz.zone, error = %e, "forward server failed");
                    self.servers.mark_dead(ip);
                    given_up.push(addr);
                    continue;
                }
            };
            self.servers.record_rtt(ip, reply.rtt);
            let outcome = if fz.recursion {
                classify_forwarded(&reply.msg, sname, stype)
            } else {
                classify(&self.store, &reply.msg, cut, sname, stype)
            };
            match outcome {
                Some(o) => return Ok(o),
                None => {
                    tracing::debug!(%addr, zone = %fz.zone, %sname, ?stype, "unusable reply");
                    self.servers.mark_lame(ip, &fz.zone);
                    given_up.push(addr);
                }
            }
        }
        Err(ResolveError::NoAuthority(fz.zone.clone()))
    }
}

/// What a forwarder's reply says: the chain from `sname` in its answer
/// section with the RRSIGs of its RRsets, or a negative answer with the
/// SOA and the NSEC/NSEC3 proof (and their RRSIGs) it gave, so the
/// validator sees what it sees from authoritative servers. None when it
/// is no resolver's answer (a failure RCODE, or a referral).
fn classify_forwarded(msg: &Message, sname: &Name, stype: RecordType) -> Option<Outcome> {
    let rc = msg.metadata.response_code;
    if rc != ResponseCode::NoError && rc != ResponseCode::NXDomain {
        return None;
    }
    let answers: Vec<Record> = msg
        .answers
        .iter()
        .filter(|r| r.dns_class == DNSClass::IN)
        .cloned()
        .collect();
    let denial: Vec<Record> = msg
        .authorities
        .iter()
        .filter(|r| r.dns_class == DNSClass::IN && is_denial(covered_type(r)))
        .cloned()
        .collect();
    let (used, end, complete) = follow_chain(&answers, sname, stype);
    if !used.is_empty() {
        let sigs = signatures_of(&answers, &used);
        // A wildcard expansion is proven by NSEC/NSEC3 in the authority
        // section (RFC 4035 §3.1.3.3). A chain that stops short (NXDOMAIN
        // or NODATA at its end) is continued by the walk, which asks the
        // forwarder for the target.
        return Some(Outcome::answer(used, end, complete, sigs, denial));
    }
    if !msg.metadata.recursion_available && !msg.metadata.authoritative {
        // An empty non-authoritative reply from a server that does not
        // recurse is a referral: the server is not a forwarder.
        return None;
    }
    let rcode = if rc == ResponseCode::NXDomain {
        crate::wire::query::rcode::NXDOMAIN
    } else {
        0
    };
    Some(Outcome::Negative { rcode, soa: denial })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(zone: &str, servers: &[&str]) -> ForwardConfig {
        ForwardConfig {
            zone: zone.into(),
            servers: servers.iter().map(|s| s.to_string()).collect(),
            recursion: true,
            fallback: false,
            tls: None,
        }
    }

    #[test]
    fn server_entries_take_the_default_port_unless_given() {
        assert_eq!(
            parse_server("192.0.2.1", 53).unwrap(),
            "192.0.2.1:53".parse().unwrap()
        );
        assert_eq!(
            parse_server("192.0.2.1:5353", 53).unwrap(),
            "192.0.2.1:5353".parse().unwrap()
        );
        assert_eq!(
            parse_server("2001:db8::1", 853).unwrap(),
            "[2001:db8::1]:853".parse().unwrap()
        );
        assert!(parse_server("dns.example", 53).is_err());
        assert!(parse_server("192.0.2.1:0", 53).is_err());
    }

    #[test]
    fn duplicate_zones_and_bad_servers_are_reported_per_entry() {
        let list = vec![
            entry("corp.example.", &["192.0.2.1"]),
            entry("Corp.Example", &["192.0.2.2"]),
            entry("lab.example.", &["192.0.2.300"]),
        ];
        let errs = check(&list);
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert_eq!((errs[0].0, errs[0].1), (1, "zone"));
        assert_eq!((errs[1].0, errs[1].1), (2, "servers"));
    }

    #[test]
    fn the_longest_matching_zone_wins() {
        let list = vec![
            entry(".", &["192.0.2.1"]),
            entry("corp.example.", &["192.0.2.2"]),
            entry("lab.corp.example.", &["192.0.2.3"]),
        ];
        let zones = ForwardZones::build(&list, Path::new("."), Duration::from_secs(1)).unwrap();
        let zone_for = |n: &str| {
            zones
                .find(&Name::from_ascii(n).unwrap())
                .map(|z| z.zone.to_string())
        };
        assert_eq!(
            zone_for("x.lab.corp.example.").as_deref(),
            Some("lab.corp.example.")
        );
        assert_eq!(
            zone_for("LAB.corp.example.").as_deref(),
            Some("lab.corp.example.")
        );
        assert_eq!(
            zone_for("www.corp.example.").as_deref(),
            Some("corp.example.")
        );
        assert_eq!(zone_for("example.").as_deref(), Some("."));
    }
}
