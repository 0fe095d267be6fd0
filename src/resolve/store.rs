//! What the iterator learns while walking: RRsets with their credibility
//! (RFC 2181 §5.4.1) and delegations (zone cut → NS names).
//!
//! Glue and referral data are kept at a low rank: they steer the walk but
//! are never handed to a client as an answer, and an authoritative answer
//! replaces them. Bounded by entry count; entries expire at their TTL.

use hickory_proto::rr::{Name, Record, RecordType};
use moka::sync::Cache;
use moka::Expiry;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Credibility of data, lowest first (RFC 2181 §5.4.1, simplified).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Rank {
    /// Root hints: used only until priming succeeds.
    Hint,
    /// Glue or other additional-section data.
    Glue,
    /// NS sets from a referral's authority section.
    Referral,
    /// An answer section without AA.
    NonAuthAnswer,
    /// An authoritative answer.
    AuthAnswer,
}

/// One stored RRset.
#[derive(Debug)]
pub struct RRset {
    /// The records, TTLs as received (clamped).
    pub records: Vec<Record>,
    /// Credibility.
    pub rank: Rank,
    /// Stored at.
    pub stored_at: Instant,
    /// Lifetime in seconds (smallest TTL of the set).
    pub ttl: u32,
}

impl RRset {
    fn remaining(&self, now: Instant) -> u32 {
        let age = now.saturating_duration_since(self.stored_at).as_secs();
        (self.ttl as u64).saturating_sub(age) as u32
    }
}

/// A zone cut: the zone's NS names.
#[derive(Debug, Clone)]
pub struct Delegation {
    /// The zone (lower case).
    pub zone: Name,
    /// Its name servers.
    pub ns: Vec<Name>,
}

struct SetExpiry;
impl Expiry<(Name, RecordType), Arc<RRset>> for SetExpiry {
    fn expire_after_create(
        &self,
        _k: &(Name, RecordType),
        v: &Arc<RRset>,
        _n: Instant,
    ) -> Option<Duration> {
        Some(Duration::from_secs(v.ttl as u64))
    }
    fn expire_after_update(
        &self,
        k: &(Name, RecordType),
        v: &Arc<RRset>,
        n: Instant,
        _d: Option<Duration>,
    ) -> Option<Duration> {
        self.expire_after_create(k, v, n)
    }
}

/// The iterator's memory.
pub struct Store {
    sets: Cache<(Name, RecordType), Arc<RRset>>,
    max_ttl: u32,
}

impl Store {
    /// A store bounded to about `max_bytes`, clamping TTLs to `max_ttl`.
    pub fn new(max_bytes: u64, max_ttl: u32) -> Store {
        Store {
            sets: Cache::builder()
                .max_capacity(max_bytes)
                .weigher(|k: &(Name, RecordType), v: &Arc<RRset>| {
                    // Owner name (stored once per record by hickory) plus
                    // rdata and bookkeeping; an estimate, not an audit.
                    let per = k.0.len() as u32 + 96;
                    (per.saturating_mul(v.records.len() as u32))
                        .saturating_add(k.0.len() as u32 + 128)
                })
                .expire_after(SetExpiry)
                .build(),
            max_ttl,
        }
    }

    /// Stores records (all of one owner and type) unless something more
    /// credible and still live is already there.
    pub fn put(&self, records: Vec<Record>, rank: Rank) {
        let Some(first) = records.first() else { return };
        let key = (first.name().to_lowercase(), first.record_type());
        let ttl = records
            .iter()
            .map(Record::ttl)
            .min()
            .unwrap_or(0)
            .min(self.max_ttl);
        if ttl == 0 {
            return;
        }
        let now = Instant::now();
        if let Some(old) = self.sets.get(&key) {
            if old.rank > rank && old.remaining(now) > 0 {
                return;
            }
        }
        self.sets.insert(
            key,
            Arc::new(RRset {
                records,
                rank,
                stored_at: now,
                ttl,
            }),
        );
    }

    /// Groups records by (owner, type) and stores each set.
    pub fn put_all(&self, records: &[Record], rank: Rank) {
        let mut groups: Vec<Vec<Record>> = Vec::new();
        for r in records {
            match groups.iter_mut().find(|g| {
                g.first()
                    .is_some_and(|f| f.record_type() == r.record_type() && f.name() == r.name())
            }) {
                Some(g) => g.push(r.clone()),
                None => groups.push(vec![r.clone()]),
            }
        }
        for g in groups {
            self.put(g, rank);
        }
    }

    /// Live records at or above `min_rank`, TTLs lowered by their age.
    pub fn get(&self, name: &Name, rtype: RecordType, min_rank: Rank) -> Option<Vec<Record>> {
        let set = self.sets.get(&(name.to_lowercase(), rtype))?;
        if set.rank < min_rank {
            return None;
        }
        let left = set.remaining(Instant::now());
        if left == 0 {
            return None;
        }
        Some(
            set.records
                .iter()
                .map(|r| {
                    let mut r = r.clone();
                    r.set_ttl(r.ttl().min(left).max(1));
                    r
                })
                .collect(),
        )
    }

    /// Answer-grade records with more than a tenth of their TTL left: data
    /// about to expire is refreshed upstream rather than reused (this is
    /// what makes a prefetch a real refresh).
    pub fn get_fresh(&self, name: &Name, rtype: RecordType) -> Option<Vec<Record>> {
        let set = self.sets.get(&(name.to_lowercase(), rtype))?;
        if set.rank < Rank::NonAuthAnswer
            || set.remaining(Instant::now()) as u64 * 10 <= set.ttl as u64
        {
            return None;
        }
        self.get(name, rtype, Rank::NonAuthAnswer)
    }

    /// The deepest zone cut at or above `name` with a live NS set.
    pub fn deepest_cut(&self, name: &Name) -> Option<Delegation> {
        let mut n = name.to_lowercase();
        loop {
            if let Some(ns) = self.get(&n, RecordType::NS, Rank::Hint) {
                let ns: Vec<Name> = ns
                    .iter()
                    .filter_map(|r| match r.data() {
                        Some(hickory_proto::rr::RData::NS(t)) => Some(t.0.to_lowercase()),
                        _ => None,
                    })
                    .collect();
                if !ns.is_empty() {
                    return Some(Delegation { zone: n, ns });
                }
            }
            if n.is_root() {
                return None;
            }
            n = n.base_name();
        }
    }

    /// Known addresses of a server name (any rank).
    pub fn addresses(&self, name: &Name) -> Vec<IpAddr> {
        let mut out = Vec::new();
        for t in [RecordType::A, RecordType::AAAA] {
            if let Some(rs) = self.get(name, t, Rank::Hint) {
                out.extend(rs.iter().filter_map(record_addr));
            }
        }
        out
    }

    /// Forgets everything (control `flush`).
    pub fn clear(&self) {
        self.sets.invalidate_all();
    }
}

/// The address in an A or AAAA record.
pub fn record_addr(r: &Record) -> Option<IpAddr> {
    match r.data() {
        Some(hickory_proto::rr::RData::A(a)) => Some(IpAddr::V4(a.0)),
        Some(hickory_proto::rr::RData::AAAA(a)) => Some(IpAddr::V6(a.0)),
        _ => None,
    }
}
