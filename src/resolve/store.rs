//! What the iterator learns while walking: RRsets with their credibility
//! (RFC 2181 §5.4.1), delegations (zone cut → NS names) and proven
//! nonexistence (RFC 8020).
//!
//! Data from either side of a zone cut is kept apart, as Unbound's
//! "parent-side" cache does: the parent's referral (its NS names and glue)
//! and the child's own, authoritative NS set and addresses can disagree on
//! the badly kept parts of the internet, and when the child's data (which
//! is preferred) leads nowhere, the parent's may still work. Parent-side
//! data steers the walk only; it is never handed to a client as an answer.
//!
//! Keys are lower-cased wire names with the type and side appended, hashed
//! as plain bytes: no per-lookup case folding of a `Name`. Bounded by an
//! estimate of bytes; entries are dead past their TTL and are never read
//! then, and are evicted when room is needed.
//!
//! The map is `quick_cache`, not moka: a cold query reads
//! the store about ten times (the cut, its servers' addresses, the answer)
//! and a moka read, with its read-log and clock, cost ~1,250 instructions,
//! 17% of a cold query's user-space work; a quick_cache read is a shard
//! read lock, a hash probe and one atomic bit. What moka adds (expiry
//! timers, an exact LRU-ish policy) the store does not need: a dead set is
//! skipped on read, and S3-FIFO keeps the delegations (read on every miss)
//! over one-shot answer sets.

use super::classify::covered_type;
use crate::wire::same_name;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};
use quick_cache::sync::{Cache, DefaultLifecycle};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

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

/// Which side of a zone cut said it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The delegating zone: referrals and glue (and the root hints).
    Parent,
    /// The zone itself: answers.
    Child,
}

impl Rank {
    fn side(self) -> Side {
        if self <= Rank::Referral {
            Side::Parent
        } else {
            Side::Child
        }
    }
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

/// A zone cut and the name servers both sides name for it.
#[derive(Debug, Clone)]
pub struct Delegation {
    /// The zone (compare with `Name`'s `==`, which ignores case).
    pub zone: Name,
    /// The zone's own NS set (from an authoritative answer), preferred.
    pub child_ns: Vec<Name>,
    /// The parent's NS set (from a referral, or the root hints).
    pub parent_ns: Vec<Name>,
}

impl Delegation {
    /// Every NS name, the child's first, each once.
    pub fn names(&self) -> Vec<&Name> {
        let mut out: Vec<&Name> = self.child_ns.iter().collect();
        for n in &self.parent_ns {
            if !out.contains(&n) {
                out.push(n);
            }
        }
        out
    }
}

/// Type code under which proven nonexistence (NXDOMAIN) of a name is kept;
/// 0 is reserved (RFC 6895 §3.1) so it never collides with an RRset.
const NXDOMAIN_MARK: u16 = 0;

type Key = Box<[u8]>;

/// Keys built on the stack for lookups, so reading the store allocates
/// nothing: the name's lower-cased wire form is written once, and the key
/// of the name or of any ancestor (a suffix of it) with any type and side
/// is a slice of the same buffer. A walk up the tree or a lookup of both
/// address types thus costs one pass over the labels, not one per key.
struct KeyBuf {
    /// Wire name, then type and side (rewritten per key).
    buf: [u8; 258],
    /// Bytes of the wire name, its root label included.
    name_len: usize,
}

impl KeyBuf {
    fn new(name: &Name) -> KeyBuf {
        let mut buf = [0u8; 258];
        let mut len = 0;
        for label in name.iter() {
            // A Name is at most 255 wire bytes, so this always fits; a
            // label that would not is left out rather than panic.
            let Some((len_byte, dst)) = buf
                .get_mut(len..len + 1 + label.len())
                .and_then(|d| d.split_first_mut())
            else {
                break;
            };
            *len_byte = label.len() as u8;
            dst.copy_from_slice(label);
            dst.make_ascii_lowercase();
            len += 1 + label.len();
        }
        // The root label (already zero).
        KeyBuf {
            buf,
            name_len: len + 1,
        }
    }

    /// The key of the ancestor whose wire form starts at `start` (0: the
    /// name itself; see [`KeyBuf::parent`]).
    fn key(&mut self, start: usize, rtype: u16, side: Side) -> &[u8] {
        let [hi, lo] = rtype.to_be_bytes();
        let end = self.name_len + 3;
        if let Some(tail) = self.buf.get_mut(self.name_len..end) {
            tail.copy_from_slice(&[hi, lo, side as u8]);
        }
        self.buf.get(start..end).unwrap_or(&[])
    }

    /// The (lower-cased) name starting at `start`: decoding these few
    /// bytes costs a third of what `Name::trim_to` does.
    fn name_at(&self, start: usize) -> Option<Name> {
        let wire = self.buf.get(start..self.name_len)?;
        Name::read(&mut BinDecoder::new(wire)).ok()
    }

    /// Where the parent of the name starting at `start` starts; None at
    /// the root.
    fn parent(&self, start: usize) -> Option<usize> {
        match self.buf.get(start) {
            Some(&len) if len > 0 => Some(start + 1 + len as usize),
            _ => None,
        }
    }
}

fn key(name: &Name, rtype: u16, side: Side) -> Key {
    KeyBuf::new(name).key(0, rtype, side).into()
}

/// An estimate of what a set costs in memory: the owner name (stored once
/// per record by hickory) plus rdata and bookkeeping; not an audit.
#[derive(Clone)]
struct Weigh;
impl quick_cache::Weighter<Key, Arc<RRset>> for Weigh {
    fn weight(&self, k: &Key, v: &Arc<RRset>) -> u64 {
        let per = k.len() as u64 + 96;
        per * v.records.len() as u64 + k.len() as u64 + 128
    }
}

/// Bytes a typical set weighs, for sizing the map's index.
const TYPICAL_SET: u64 = 400;

/// The iterator's memory.
pub struct Store {
    sets: Cache<Key, Arc<RRset>, Weigh, ahash::RandomState>,
    max_ttl: u32,
}

impl Store {
    /// A store bounded to about `max_bytes`, clamping TTLs to `max_ttl`.
    pub fn new(max_bytes: u64, max_ttl: u32) -> Store {
        Store {
            sets: Cache::with(
                (max_bytes / TYPICAL_SET).clamp(64, 1 << 24) as usize,
                max_bytes.max(1),
                Weigh,
                ahash::RandomState::new(),
                DefaultLifecycle::default(),
            ),
            max_ttl,
        }
    }

    /// Stores records (all of one owner and type) unless something more
    /// credible and still live is already there on the same side.
    pub fn put(&self, records: Vec<Record>, rank: Rank) {
        let Some(first) = records.first() else { return };
        let key = key(&first.name, covered_type(first).into(), rank.side());
        let ttl = records.iter().map(|r| r.ttl).min().unwrap_or(0);
        self.insert(key, records, rank, ttl);
    }

    fn insert(&self, key: Key, records: Vec<Record>, rank: Rank, ttl: u32) {
        let ttl = ttl.min(self.max_ttl);
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
    pub fn put_all<'a>(&self, records: impl IntoIterator<Item = &'a Record>, rank: Rank) {
        let mut groups: Vec<Vec<Record>> = Vec::new();
        for r in records {
            match groups.iter_mut().find(|g| {
                // An RRSIG is kept with the RRset it covers.
                g.first().is_some_and(|f| {
                    covered_type(f) == covered_type(r) && same_name(&f.name, &r.name)
                })
            }) {
                Some(g) => g.push(r.clone()),
                None => groups.push(vec![r.clone()]),
            }
        }
        for g in groups {
            self.put(g, rank);
        }
    }

    fn live(&self, key: &[u8]) -> Option<(Arc<RRset>, u32)> {
        let set = self.sets.get(key)?;
        let left = set.remaining(Instant::now());
        (left > 0).then_some((set, left))
    }

    /// Live records at or above `min_rank`: the child's when it has them,
    /// else (when `min_rank` allows) the parent's.
    pub fn get(&self, name: &Name, rtype: RecordType, min_rank: Rank) -> Option<Vec<Record>> {
        let mut k = KeyBuf::new(name);
        for side in [Side::Child, Side::Parent] {
            if side == Side::Parent && min_rank > Rank::Referral {
                break;
            }
            if let Some((set, left)) = self.live(k.key(0, rtype.into(), side)) {
                if set.rank >= min_rank {
                    return Some(aged(&set, left));
                }
            }
        }
        None
    }

    /// Answer-grade records with more than a tenth of their TTL left: data
    /// about to expire is refreshed upstream rather than reused (this is
    /// what makes a prefetch a real refresh).
    pub fn get_fresh(&self, name: &Name, rtype: RecordType) -> Option<Vec<Record>> {
        let (set, left) = self.live(KeyBuf::new(name).key(0, rtype.into(), Side::Child))?;
        if set.rank < Rank::NonAuthAnswer || left as u64 * 10 <= set.ttl as u64 {
            return None;
        }
        Some(aged(&set, left))
    }

    /// The deepest zone cut at or above `name` with a live NS set on
    /// either side.
    pub fn deepest_cut(&self, name: &Name) -> Option<Delegation> {
        let mut k = KeyBuf::new(name);
        let mut start = 0;
        let mut labels = name.num_labels() as usize;
        loop {
            let mut names = |side| {
                self.live(k.key(start, RecordType::NS.into(), side))
                    .map(|(rs, _)| {
                        rs.records
                            .iter()
                            .filter_map(ns_target)
                            .collect::<Vec<Name>>()
                    })
                    .unwrap_or_default()
            };
            let (child_ns, parent_ns) = (names(Side::Child), names(Side::Parent));
            if !child_ns.is_empty() || !parent_ns.is_empty() {
                return Some(Delegation {
                    zone: k.name_at(start).unwrap_or_else(|| name.trim_to(labels)),
                    child_ns,
                    parent_ns,
                });
            }
            start = k.parent(start)?;
            labels = labels.saturating_sub(1);
        }
    }

    /// Known addresses of a server name from the child's side and from
    /// the parent's, with one pass over the name.
    pub fn addresses_both(&self, name: &Name) -> (Vec<IpAddr>, Vec<IpAddr>) {
        let mut k = KeyBuf::new(name);
        (
            self.addresses_at(&mut k, Side::Child),
            self.addresses_at(&mut k, Side::Parent),
        )
    }

    fn addresses_at(&self, k: &mut KeyBuf, side: Side) -> Vec<IpAddr> {
        let mut out = Vec::new();
        for t in [RecordType::A, RecordType::AAAA] {
            if let Some((set, _)) = self.live(k.key(0, t.into(), side)) {
                out.extend(set.records.iter().filter_map(record_addr));
            }
        }
        out
    }

    /// Remembers that `name` does not exist, for `ttl` seconds.
    pub fn put_nxdomain(&self, name: &Name, ttl: u32) {
        let key = key(name, NXDOMAIN_MARK, Side::Child);
        self.insert(key, Vec::new(), Rank::AuthAnswer, ttl);
    }

    /// Whether `name` or an ancestor is known not to exist (RFC 8020:
    /// nothing exists below a name that does not exist).
    pub fn nxdomain(&self, name: &Name) -> bool {
        let mut k = KeyBuf::new(name);
        let mut start = Some(0);
        while let Some(at) = start {
            if self.live(k.key(at, NXDOMAIN_MARK, Side::Child)).is_some() {
                return true;
            }
            start = k.parent(at);
        }
        false
    }

    /// Forgets everything (control `flush`).
    pub fn clear(&self) {
        self.sets.clear();
    }
}

fn aged(set: &RRset, left: u32) -> Vec<Record> {
    set.records
        .iter()
        .map(|r| {
            let mut r = r.clone();
            r.ttl = r.ttl.min(left).max(1);
            r
        })
        .collect()
}

/// The name server an NS record names, lower case.
pub fn ns_target(r: &Record) -> Option<Name> {
    match &r.data {
        RData::NS(t) => Some(t.0.to_lowercase()),
        _ => None,
    }
}

/// The address in an A or AAAA record.
pub fn record_addr(r: &Record) -> Option<IpAddr> {
    match &r.data {
        RData::A(a) => Some(IpAddr::V4(a.0)),
        RData::AAAA(a) => Some(IpAddr::V6(a.0)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::rdata::{A, NS};

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    #[test]
    fn an_ancestors_key_is_the_key_built_for_it() {
        let mut k = KeyBuf::new(&name("Www.Example.TEST."));
        let mut starts = vec![0];
        while let Some(next) = k.parent(*starts.last().unwrap()) {
            starts.push(next);
        }
        let ancestors = ["www.example.test.", "example.test.", "test.", "."];
        assert_eq!(starts.len(), ancestors.len());
        for (start, ancestor) in starts.into_iter().zip(ancestors) {
            let direct = key(&name(ancestor), 2, Side::Parent);
            assert_eq!(k.key(start, 2, Side::Parent), &direct[..], "{ancestor}");
            assert_eq!(k.name_at(start), Some(name(ancestor)));
        }
    }

    #[test]
    fn deepest_cut_finds_the_nearest_delegation_in_any_case() {
        let store = Store::new(1 << 20, 86400);
        let ns = |zone: &str, target: &str| {
            Record::from_rdata(name(zone), 3600, RData::NS(NS(name(target))))
        };
        store.put(vec![ns(".", "a.root-servers.test.")], Rank::Referral);
        store.put(
            vec![ns("example.test.", "ns1.example.test.")],
            Rank::AuthAnswer,
        );
        let cut = store.deepest_cut(&name("WWW.Example.Test.")).unwrap();
        assert_eq!(cut.zone, name("example.test."));
        assert_eq!(cut.child_ns, vec![name("ns1.example.test.")]);
        assert!(cut.parent_ns.is_empty());
        let root = store.deepest_cut(&name("other.invalid.")).unwrap();
        assert!(root.zone.is_root());
        assert_eq!(root.parent_ns, vec![name("a.root-servers.test.")]);
    }

    #[test]
    fn addresses_come_from_the_side_that_gave_them() {
        let store = Store::new(1 << 20, 86400);
        let a = |ip: [u8; 4]| {
            Record::from_rdata(
                name("ns1.example.test."),
                3600,
                RData::A(A::from(std::net::Ipv4Addr::from(ip))),
            )
        };
        store.put(vec![a([192, 0, 2, 1])], Rank::Glue);
        store.put(vec![a([192, 0, 2, 2])], Rank::AuthAnswer);
        let (child, parent) = store.addresses_both(&name("NS1.example.test."));
        assert_eq!(child, vec![IpAddr::from([192, 0, 2, 2])]);
        assert_eq!(parent, vec![IpAddr::from([192, 0, 2, 1])]);
        assert_eq!(
            store.addresses_both(&name("ns1.example.test.")),
            (child, parent)
        );
    }
}
