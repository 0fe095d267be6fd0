//! Aggressive use of the validated cache (RFC 8198): NSEC records that
//! proved a negative answer secure are kept per zone in canonical order,
//! and a later question whose name falls inside a kept range (with the
//! wildcard also proven absent) is answered NXDOMAIN or NODATA from them,
//! without asking upstream.
//!
//! Only NSEC is used: NSEC3 ranges would need a hash per question and the
//! opt-out rules (RFC 8198 §5.2 allows it; Unbound's default is NSEC only
//! too). Entries live for the smallest TTL of the proof they came in,
//! which validation has already capped by the RRSIG's validity.

use super::classify::covered_type;
use crate::validate::nsec;
use hickory_proto::dnssec::rdata::{DNSSECRData, NSEC};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use moka::sync::Cache;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// NSEC ranges kept per zone at most; a zone walked further than this
/// keeps its most recent proofs only.
const MAX_PER_ZONE: usize = 4096;

/// One kept NSEC RRset with its RRSIGs.
#[derive(Debug, Clone)]
struct Range {
    records: Vec<Record>,
    until: Instant,
}

/// What one zone has proven.
#[derive(Debug, Default)]
struct ZoneProofs {
    /// Owner (lower case) → its NSEC RRset and RRSIGs.
    ranges: BTreeMap<Name, Range>,
    /// The zone's SOA and its RRSIG, for the authority section.
    soa: Option<Range>,
}

/// Validated NSEC ranges by zone.
pub struct NsecCache {
    zones: Cache<Name, Arc<Mutex<ZoneProofs>>>,
}

impl Default for NsecCache {
    fn default() -> Self {
        NsecCache {
            zones: Cache::builder()
                .max_capacity(10_000)
                .time_to_idle(Duration::from_secs(3600))
                .build(),
        }
    }
}

fn nsec_of(r: &Record) -> Option<&NSEC> {
    match &r.data {
        RData::DNSSEC(DNSSECRData::NSEC(n)) => Some(n),
        _ => None,
    }
}

impl NsecCache {
    /// Keeps the NSEC and SOA RRsets (with RRSIGs) of `authority`, which
    /// validation has just verified for `zone`.
    pub fn remember(&self, zone: &Name, authority: &[Record]) {
        let Some(ttl) = authority.iter().map(|r| r.ttl).min() else {
            return;
        };
        let until = Instant::now() + Duration::from_secs(ttl as u64);
        let entry = self.zones.get_with(zone.to_lowercase(), || {
            Arc::new(Mutex::new(ZoneProofs::default()))
        });
        let Ok(mut z) = entry.lock() else { return };
        let owners: Vec<Name> = authority
            .iter()
            .filter(|r| r.record_type() == RecordType::NSEC)
            .map(|r| r.name.to_lowercase())
            .collect();
        for owner in owners {
            let records: Vec<Record> = authority
                .iter()
                .filter(|r| r.name == owner && covered_type(r) == RecordType::NSEC)
                .cloned()
                .collect();
            if z.ranges.len() >= MAX_PER_ZONE && !z.ranges.contains_key(&owner) {
                let now = Instant::now();
                z.ranges.retain(|_, r| r.until > now);
                if z.ranges.len() >= MAX_PER_ZONE {
                    continue;
                }
            }
            z.ranges.insert(owner, Range { records, until });
        }
        let soa: Vec<Record> = authority
            .iter()
            .filter(|r| covered_type(r) == RecordType::SOA && r.name == *zone)
            .cloned()
            .collect();
        if !soa.is_empty() {
            z.soa = Some(Range {
                records: soa,
                until,
            });
        }
    }

    /// A proven negative answer for (`qname`, `qtype`) from the ranges of
    /// the deepest zone above it that has any: the RCODE and the authority
    /// section (SOA, NSEC, RRSIGs).
    pub fn answer(&self, qname: &Name, qtype: RecordType) -> Option<(u16, Vec<Record>)> {
        let mut zone = qname.to_lowercase();
        let entry = loop {
            if let Some(e) = self.zones.get(&zone) {
                break e;
            }
            if zone.is_root() {
                return None;
            }
            zone = zone.base_name();
        };
        let z = entry.lock().ok()?;
        let now = Instant::now();
        let soa = z.soa.as_ref().filter(|s| s.until > now)?;
        let live = |n: &Name| z.ranges.get(n).filter(|r| r.until > now);
        // The kept range at or just before `name` in canonical order.
        let before = |name: &Name| {
            z.ranges
                .range(..=name.to_lowercase())
                .next_back()
                .filter(|(_, r)| r.until > now)
                .map(|(_, r)| r)
        };
        let mut used: Vec<&Range> = Vec::new();
        let q = qname.to_lowercase();
        let rcode = if let Some(r) = live(&q) {
            let n = r.records.iter().find_map(nsec_of)?;
            let pair = [(&q, n)];
            if !nsec::proves_nodata(&pair, &q, qtype) {
                return None;
            }
            used.push(r);
            0
        } else {
            // NXDOMAIN: a range covers the name, and one covers (or an
            // NSEC at) the wildcard at its closest encloser proves no
            // wildcard exists.
            let r = before(&q)?;
            let owner = r.records.first()?.name.to_lowercase();
            let n = r.records.iter().find_map(nsec_of)?;
            if !nsec::covers(&owner, n, &q) {
                return None;
            }
            used.push(r);
            let ce = nsec::closest_encloser(&q, &owner, n.next_domain_name());
            let wild = nsec::wildcard_of(&ce)?;
            let w = before(&wild)?;
            let wowner = w.records.first()?.name.to_lowercase();
            let wn = w.records.iter().find_map(nsec_of)?;
            if !nsec::covers(&wowner, wn, &wild) {
                return None;
            }
            if !std::ptr::eq(w, r) {
                used.push(w);
            }
            // The NXDOMAIN proof must hold as the validator checks it.
            let pairs: Vec<(&Name, &NSEC)> = vec![(&owner, n), (&wowner, wn)];
            if !nsec::proves_nxdomain(&pairs, &q) {
                return None;
            }
            3
        };
        // TTLs count down from when the proofs were kept.
        let until = used.iter().map(|r| r.until).fold(soa.until, Instant::min);
        let left = until.saturating_duration_since(now).as_secs().max(1) as u32;
        let mut authority: Vec<Record> = soa.records.clone();
        for r in used {
            authority.extend(r.records.iter().cloned());
        }
        for r in authority.iter_mut() {
            r.ttl = r.ttl.min(left);
        }
        Some((rcode, authority))
    }

    /// Forgets everything (control `flush`).
    pub fn clear(&self) {
        self.zones.invalidate_all();
    }
}
