//! Special-use names answered locally, never sent upstream: RFC 6761 §6
//! (`localhost.`, `invalid.`, `test.`), RFC 7686 (`onion.`), RFC 8375
//! (`home.arpa.`) and the locally served reverse zones of RFC 6303 §4
//! (private, link-local, loopback and documentation address space), so
//! private lookups never leak to the public AS112 servers.
//!
//! Each is a small static [`Zone`]: the apex holds the SOA and NS of
//! RFC 6303 §3 (`localhost.` as MNAME and NS, `nobody.invalid.` as RNAME),
//! every other name is NXDOMAIN, except `localhost.` (and names under it,
//! RFC 6761 §6.3) which answer 127.0.0.1 and ::1, and the loopback
//! addresses' PTR which answers `localhost.`. This is what Unbound's default
//! local zones do.

use hickory_proto::rr::rdata::{A, AAAA, NS, PTR, SOA};
use hickory_proto::rr::{DNSClass, Name, RData, Record};
use std::net::{Ipv4Addr, Ipv6Addr};

use super::zone::{is_at_or_under, Zone};

/// TTL of everything synthesised here (RFC 6303 §3's SOA MINIMUM).
const TTL: u32 = 10800;

/// `::1` and `::` reversed, without the final `ip6.arpa.`.
const V6_LOOPBACK: &str = "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0";
const V6_UNSPECIFIED: &str = "0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0";

/// The origins served, lower case, fully qualified.
pub fn origins() -> Vec<Name> {
    let mut out: Vec<String> = [
        "localhost.",
        "invalid.",
        "test.",
        "onion.",
        "home.arpa.",
        // RFC 6303 §4.1 (RFC 1918).
        "10.in-addr.arpa.",
        "168.192.in-addr.arpa.",
        // §4.2 (RFC 5735 special IPv4).
        "0.in-addr.arpa.",
        "127.in-addr.arpa.",
        "254.169.in-addr.arpa.",
        "2.0.192.in-addr.arpa.",
        "100.51.198.in-addr.arpa.",
        "113.0.203.in-addr.arpa.",
        "255.255.255.255.in-addr.arpa.",
        // §4.4 (ULA), §4.5 (link-local), §4.6 (documentation).
        "d.f.ip6.arpa.",
        "8.e.f.ip6.arpa.",
        "9.e.f.ip6.arpa.",
        "a.e.f.ip6.arpa.",
        "b.e.f.ip6.arpa.",
        "8.b.d.0.1.0.0.2.ip6.arpa.",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    out.extend((16..=31).map(|i| format!("{i}.172.in-addr.arpa.")));
    // §4.3: the unspecified and loopback addresses.
    out.push(format!("{V6_UNSPECIFIED}.ip6.arpa."));
    out.push(format!("{V6_LOOPBACK}.ip6.arpa."));
    out.iter()
        .filter_map(|s| Name::from_ascii(s).ok())
        .collect()
}

/// The special-use zones, less those at or under an `exclude` name (the
/// operator resolves them normally) and those at or under a configured
/// local zone (which answers for them instead).
pub(crate) fn zones(exclude: &[Name], local_origins: &[Name]) -> Vec<Zone> {
    origins()
        .into_iter()
        .filter(|o| !exclude.iter().any(|x| is_at_or_under(o, x)))
        .filter(|o| !local_origins.iter().any(|l| is_at_or_under(o, l)))
        .map(build)
        .collect()
}

fn build(origin: Name) -> Zone {
    let mut zone = Zone::new(origin.clone(), TTL);
    let localhost = Name::from_ascii("localhost.").unwrap_or_else(|_| Name::root());
    let nobody = Name::from_ascii("nobody.invalid.").unwrap_or_else(|_| Name::root());
    let mut records = vec![
        record(
            &origin,
            RData::SOA(SOA::new(
                localhost.clone(),
                nobody,
                1,
                3600,
                1200,
                604800,
                TTL,
            )),
        ),
        record(&origin, RData::NS(NS(localhost.clone()))),
    ];
    let text = origin.to_ascii();
    if origin == localhost {
        let wildcard = Name::from_ascii("*.localhost.").unwrap_or_else(|_| origin.clone());
        for owner in [&origin, &wildcard] {
            records.push(record(owner, RData::A(A(Ipv4Addr::LOCALHOST))));
            records.push(record(owner, RData::AAAA(AAAA(Ipv6Addr::LOCALHOST))));
        }
    } else if text == "127.in-addr.arpa." {
        if let Ok(owner) = Name::from_ascii("1.0.0.127.in-addr.arpa.") {
            records.push(record(&owner, RData::PTR(PTR(localhost))));
        }
    } else if text.starts_with(V6_LOOPBACK) {
        records.push(record(&origin, RData::PTR(PTR(localhost))));
    }
    zone.add_static(records);
    zone.finish_apex();
    zone.finish_tree();
    zone
}

fn record(owner: &Name, data: RData) -> Record {
    let mut r = Record::from_rdata(owner.clone(), TTL, data);
    r.dns_class = DNSClass::IN;
    r
}
