//! The answer cache: complete answers in wire form keyed by (lower-cased
//! name, type), bounded by memory, aged per RFC 1035 §6.1.2 and RFC 2308.
//!
//! What lives here:
//! - positive answers and negative ones (NXDOMAIN, NODATA; RFC 2308 §5), whose
//!   lifetime is the smallest TTL they contain after clamping;
//! - resolution failures for `servfail_ttl` seconds (RFC 9520 §3.2);
//! - NXDOMAIN names, so a name below one is answered without asking
//!   (RFC 8020 §2).
//!
//! Expiry is lazy, as in Unbound: an entry is checked against its TTL when
//! read ([`WireAnswer::expired`]) and stays until memory pressure evicts
//! it, so expired entries can be served stale (RFC 8767) for up to
//! `stale_max` (checked on read too). Per-entry timers would cost ~50
//! bytes an entry for nothing. The iterator's RRsets and delegations live in
//! `resolve::store`.

use crate::config::CacheConfig;
use crate::validate::Security;
use crate::wire::answer::{Sections, WireAnswer};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::time::Instant;

/// A cached answer shared between the cache and replies in progress.
pub type Entry = Arc<WireAnswer>;

/// Lower-cased wire name + QTYPE, owned (for maps of work in progress).
pub type CacheKey = Box<[u8]>;

/// The client-facing answer cache.
#[derive(Clone)]
pub struct AnswerCache {
    /// Indexed by a keyed hash of the cache key rather than the key itself:
    /// the answer already holds its question, so storing the key again
    /// would cost an allocation per entry. A hit is confirmed against the
    /// stored question ([`WireAnswer::answers_key`]); two keys whose hashes
    /// collide evict each other, they are never confused.
    answers: Option<Arc<Answers>>,
    /// Random per process (aHash), so clients cannot aim for collisions.
    hash_keys: ahash::RandomState,
    /// Names known not to exist, with the SOA that said so.
    /// Keyed by lower-cased wire name, so the lookup walks the suffixes of
    /// a query's name bytes without decoding or allocating.
    nxdomains: Option<Arc<NxCache>>,
    /// TTL policy; swapped whole by a reload (`max_size` keeps the value
    /// the cache was built with).
    cfg: Arc<arc_swap::ArcSwap<CacheConfig>>,
    /// Answers pushed out by the memory bound (not by expiry or flush).
    evictions: Arc<std::sync::atomic::AtomicU64>,
    /// Lifetime of a bogus answer (`[dnssec] bogus_ttl`).
    bogus_ttl: u32,
    /// Bumped by every flush, so each [`Front`] drops what it copied.
    generation: Arc<std::sync::atomic::AtomicU64>,
}

/// Most sets in a [`Front`] (two entries each): 16,384 entries, 256 KiB
/// of slots, enough for the names a busy resolver's clients repeat most.
const FRONT_SETS_MAX: usize = 8192;
/// One set per this many bytes of `max_size`, so a small cache gets a
/// small front: the entries a front keeps alive beyond `max_size` are at
/// most two per 64 KiB of it (about 3% of it for 1 KiB answers).
const FRONT_BYTES_PER_SET: u64 = 64 * 1024;

/// One listener thread's own small copy of the entries it hit last, in
/// front of the shared cache: two-way set-associative by the key's hash,
/// the newer entry of a set in its first way.
///
/// Why: a lookup in the shared cache records the read for its eviction
/// policy (a channel send, and now and then a drain of it), and clones
/// and drops the entry's `Arc`: together a third of a cache hit's user
/// time on a hot load (issue 14). A hit in the front costs a hash, one or
/// two key compares and an expiry check, and writes nothing shared.
///
/// It holds only live entries and serves one only while it is live, so
/// it answers what the shared cache would have, except after the shared
/// cache has replaced an entry with a fresher copy of the same answer (a
/// prefetch): until the older one expires, the front serves it. A flush
/// empties every front before its next lookup (the cache's generation).
/// An entry it holds stays in memory until its slot is reused or it
/// expires, so a front can keep up to two entries per set alive beyond
/// `max_size`. The shared cache does not see the front's hits: its
/// eviction ranks names by the lookups that missed the front, so a hot
/// name may be evicted there while the front still answers it (it costs
/// one resolution when it expires; a prefetch usually comes first).
pub struct Front {
    sets: Vec<[Option<(u64, Entry)>; 2]>,
    generation: u64,
}

impl Front {
    fn lookup(&self, set: usize, hash: u64, key: &[u8], now: Instant) -> Option<usize> {
        let ways = self.sets.get(set)?;
        ways.iter().position(
            |w| matches!(w, Some((h, e)) if *h == hash && e.answers_key(key) && !e.expired(now)),
        )
    }
}

/// What one entry costs beyond its key and answer: quick_cache's slot and
/// hash-table index, the `Arc`'s counts and allocator rounding.
/// Measured with `cargo bench --bench hot_path` (resident bytes per entry
/// minus what the weigher counted), so `max_size` bounds real memory.
const ENTRY_OVERHEAD: usize = 94;

/// A lower-cased wire name (its length is what the weigher needs).
type NxKey = Box<[u8]>;

/// An NXDOMAIN remembered for RFC 8020 cuts.
#[derive(Debug)]
pub struct NxDomain {
    /// The SOA from the authority section, TTL already clamped.
    pub soa: Record,
    /// When it was stored.
    pub stored_at: Instant,
}

/// The answer cache's keys are already keyed hashes: pass them through.
#[derive(Default)]
pub struct PrehashedKey(u64);

impl Hasher for PrehashedKey {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are hashed here; fold anything else all the same.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// The answers, by keyed hash. quick_cache, not moka (which this cache
/// used until issue 8's cold-path work): a miss reads it twice (the
/// listener's lookup, then serve-stale's) and stores once, and moka's
/// read (its read log, clock, key lock) and insert (write log, timer
/// wheel) came to ~4,000 instructions of a cold query; quick_cache's are
/// a shard lock and a hash probe. Expiry was already checked on read;
/// what moka's time-to-live added, removing entries past `max_ttl +
/// stale_max` before memory pressure does, is not needed for a bound.
type Answers =
    quick_cache::sync::Cache<u64, Entry, AnswerWeight, BuildHasherDefault<PrehashedKey>, Evictions>;

/// An answer's weight: its encoded size and [`ENTRY_OVERHEAD`].
#[derive(Clone)]
struct AnswerWeight;

impl quick_cache::Weighter<u64, Entry> for AnswerWeight {
    fn weight(&self, _k: &u64, v: &Entry) -> u64 {
        (v.size() + ENTRY_OVERHEAD) as u64
    }
}

/// Counts answers pushed out by the memory bound.
#[derive(Clone)]
struct Evictions(Arc<std::sync::atomic::AtomicU64>);

impl quick_cache::Lifecycle<u64, Entry> for Evictions {
    type RequestState = ();
    fn on_evict(&self, _: &mut (), _k: u64, _v: Entry) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Proven nonexistence by name. quick_cache, not moka: every miss reads it
/// once per label of the name (RFC 8020), and a moka read cost about 700
/// instructions; expiry is checked on read.
type NxCache = quick_cache::sync::Cache<NxKey, Arc<NxDomain>, NxWeight, ahash::RandomState>;

/// What an NXDOMAIN entry costs: the key twice (hickory's SOA owner) and
/// the SOA record.
#[derive(Clone)]
struct NxWeight;

impl quick_cache::Weighter<NxKey, Arc<NxDomain>> for NxWeight {
    fn weight(&self, k: &NxKey, _v: &Arc<NxDomain>) -> u64 {
        k.len() as u64 * 2 + 200
    }
}

impl AnswerCache {
    /// A cache bounded by `cfg.max_size` bytes (0 disables it).
    pub fn new(cfg: &CacheConfig) -> AnswerCache {
        let enabled = cfg.max_size.0 > 0;
        // max_size is shared: 11/16 for answers, 1/16 for NXDOMAIN names,
        // 1/4 for the iterator's RRsets and delegations (resolve::store).
        let evictions = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let answers = enabled.then(|| {
            let bytes = (cfg.max_size.0 / 16 * 11).max(1);
            Arc::new(Answers::with(
                // A guess at the count for sizing the index: a 150-byte
                // answer with its overhead.
                (bytes / (150 + ENTRY_OVERHEAD as u64)).clamp(16, 1 << 24) as usize,
                bytes,
                AnswerWeight,
                BuildHasherDefault::<PrehashedKey>::default(),
                Evictions(evictions.clone()),
            ))
        });
        let nxdomains = enabled.then(|| {
            let bytes = (cfg.max_size.0 / 16).max(1);
            Arc::new(NxCache::with(
                (bytes / 240).clamp(16, 1 << 22) as usize,
                bytes,
                NxWeight,
                ahash::RandomState::new(),
                quick_cache::sync::DefaultLifecycle::default(),
            ))
        });
        AnswerCache {
            answers,
            hash_keys: ahash::RandomState::new(),
            nxdomains,
            cfg: Arc::new(arc_swap::ArcSwap::from_pointee(cfg.clone())),
            evictions,
            bogus_ttl: 60,
            generation: Arc::default(),
        }
    }

    /// Sets how long bogus answers are kept (`[dnssec] bogus_ttl`).
    pub fn with_bogus_ttl(mut self, secs: u32) -> AnswerCache {
        self.bogus_ttl = secs;
        self
    }

    /// The entry for a key, live or stale.
    #[inline]
    pub fn get(&self, key: &[u8]) -> Option<Entry> {
        self.get_hashed(self.hash_keys.hash_one(key), key)
    }

    fn get_hashed(&self, hash: u64, key: &[u8]) -> Option<Entry> {
        let e = self.answers.as_ref()?.get(&hash)?;
        e.answers_key(key).then_some(e)
    }

    /// An empty [`Front`] for one listener thread, sized by `max_size`.
    pub fn front(&self) -> Front {
        let sets =
            (self.cfg.load().max_size.0 / FRONT_BYTES_PER_SET).clamp(1, FRONT_SETS_MAX as u64);
        Front {
            sets: vec![[None, None]; sets.next_power_of_two() as usize],
            generation: self.generation.load(std::sync::atomic::Ordering::Acquire),
        }
    }

    /// The answer for `key` live at `now`, through a thread's [`Front`]:
    /// from it when it holds one, else from the cache (and then kept in
    /// it). None when there is no live answer (an expired one may still be
    /// in the cache for serve-stale; [`AnswerCache::get`] finds it).
    #[inline]
    pub fn get_live<'f>(
        &self,
        front: &'f mut Front,
        key: &[u8],
        now: Instant,
    ) -> Option<&'f Entry> {
        let generation = self.generation.load(std::sync::atomic::Ordering::Acquire);
        if front.generation != generation {
            front.sets.iter_mut().for_each(|s| *s = [None, None]);
            front.generation = generation;
        }
        let hash = self.hash_keys.hash_one(key);
        // Sets are a power of two; the hash is keyed per process.
        let set = (hash as usize) & front.sets.len().wrapping_sub(1);
        let way = match front.lookup(set, hash, key, now) {
            Some(way) => way,
            None => {
                let e = self.get_hashed(hash, key).filter(|e| !e.expired(now))?;
                let ways = front.sets.get_mut(set)?;
                ways.swap(0, 1);
                ways[0] = Some((hash, e));
                0
            }
        };
        front.sets.get(set)?.get(way)?.as_ref().map(|(_, e)| e)
    }

    /// Stores an answer as it is (one from the shared cache, whose TTL
    /// policy was applied where it was resolved).
    pub fn insert(&self, key: &[u8], e: Entry) {
        if let Some(c) = &self.answers {
            c.insert(self.hash_keys.hash_one(key), e);
        }
    }

    /// Applies TTL policy to fresh sections and stores them; returns the
    /// encoded answer either way.
    pub fn store(
        &self,
        key: &[u8],
        qname: &Name,
        qtype: RecordType,
        mut s: Sections,
    ) -> Option<Entry> {
        let cfg = self.cfg.load();
        let negative = s.rcode == 3 || (s.rcode == 0 && s.answer.is_empty());
        let failure = s.rcode != 0 && s.rcode != 3;
        if negative {
            for r in s.authority.iter_mut() {
                if let RData::SOA(soa) = &r.data {
                    let ttl = r.ttl.min(soa.minimum).min(cfg.max_negative_ttl);
                    r.ttl = ttl;
                }
            }
        } else {
            for r in s
                .answer
                .iter_mut()
                .chain(s.authority.iter_mut())
                .chain(s.additional.iter_mut())
            {
                r.ttl = r.ttl.clamp(cfg.min_ttl, cfg.max_ttl);
            }
        }
        // Only the SOA is needed after encoding; the sections move into it.
        let rcode = s.rcode;
        let soa = s
            .authority
            .iter()
            .find(|r| r.record_type() == RecordType::SOA)
            .cloned();
        let mut a = WireAnswer::encode(qname, qtype, s).ok()?;
        let bogus = a.security == Security::Bogus;
        if bogus {
            // Remembered so a broken zone is not re-validated per query;
            // CD=1 clients get the data from this entry meanwhile.
            a.ttl = a.ttl.min(self.bogus_ttl);
        } else if failure {
            a.ttl = cfg.servfail_ttl;
        } else if negative && soa.is_none() {
            // RFC 2308 §5 says not to cache it at all; a short floor
            // instead keeps a burst of the same question off the server.
            a.ttl = cfg.negative_ttl_without_soa;
        }
        let a = Arc::new(a);
        if a.ttl > 0 {
            if let Some(c) = &self.answers {
                c.insert(self.hash_keys.hash_one(key), a.clone());
            }
            if let (3, false, Some(nx), Some(soa)) = (rcode, bogus, &self.nxdomains, soa) {
                nx.insert(
                    name_to_wire(qname).into_boxed_slice(),
                    Arc::new(NxDomain {
                        soa,
                        stored_at: Instant::now(),
                    }),
                );
            }
        }
        Some(a)
    }

    /// RFC 8020: a cached NXDOMAIN at `qname` or an ancestor answers for it.
    /// Returns the SOA with its TTL aged.
    /// `name` is lower-cased and uncompressed, as in a query key.
    pub fn nxdomain_cut(&self, name: &[u8]) -> Option<Record> {
        let nx = self.nxdomains.as_ref()?;
        let mut at = 0usize;
        while let Some(&len) = name.get(at) {
            let suffix = name.get(at..).unwrap_or(&[]);
            if let Some(e) = nx.get(suffix) {
                let age = e.stored_at.elapsed().as_secs() as u32;
                let left = e.soa.ttl.saturating_sub(age);
                if left > 0 {
                    let mut soa = e.soa.clone();
                    soa.ttl = left;
                    return Some(soa);
                }
            }
            if len == 0 {
                break;
            }
            at += 1 + usize::from(len);
        }
        None
    }

    /// Removes everything.
    pub fn flush_all(&self) {
        if let Some(c) = &self.answers {
            c.clear();
        }
        if let Some(c) = &self.nxdomains {
            c.clear();
        }
        // After the removal, so a front refilled in between cannot keep
        // what was just removed.
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    /// Removes entries for `name`, or for it and everything below when
    /// `subtree`. Returns once the removal is visible to lookups.
    pub fn flush_name(&self, name: &Name, subtree: bool) {
        let target = name.to_lowercase();
        let wire = name_to_wire(&target);
        if let Some(c) = &self.answers {
            c.retain(|_, v| {
                let name = v.question_name();
                let hit = if subtree {
                    name.ends_with(&wire) && label_boundary(name, wire.len())
                } else {
                    name == &wire[..]
                };
                !hit
            });
        }
        // After the removal, so a front refilled in between cannot keep
        // what was just removed.
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        if let Some(c) = &self.nxdomains {
            c.retain(|k, _| {
                let hit = if subtree {
                    k.ends_with(&wire) && label_boundary(k, wire.len())
                } else {
                    k[..] == wire[..]
                };
                !hit
            });
        }
    }

    /// (entries, bytes) currently held.
    pub fn usage(&self) -> (u64, u64) {
        match &self.answers {
            Some(c) => (c.len() as u64, c.weight()),
            None => (0, 0),
        }
    }

    /// Every answer still live at `now` (for `dump-cache`; walks the whole
    /// cache, never called on the query path).
    pub fn live_entries(&self, now: Instant) -> Vec<Entry> {
        match &self.answers {
            Some(c) => c
                .iter()
                .map(|(_, e)| e)
                .filter(|e| !e.expired(now))
                .collect(),
            None => Vec::new(),
        }
    }

    /// Answers evicted by the memory bound since start.
    pub fn evictions(&self) -> u64 {
        self.evictions.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The policy in force.
    pub fn config(&self) -> arc_swap::Guard<Arc<CacheConfig>> {
        self.cfg.load()
    }

    /// Applies a reloaded `[cache]` section: TTL clamps, negative and
    /// failure TTLs, prefetch and serve-stale take effect for the next
    /// answer. `max_size` is not resizable in place (a restart applies it).
    pub fn set_config(&self, cfg: &CacheConfig) {
        let mut next = cfg.clone();
        next.max_size = self.cfg.load().max_size;
        self.cfg.store(Arc::new(next));
    }
}

/// Whether the suffix of length `n` of a wire name starts at a label
/// boundary (so `xample.com` does not match inside `example.com`).
fn label_boundary(name: &[u8], n: usize) -> bool {
    let start = name.len() - n;
    let mut i = 0usize;
    while i < name.len() {
        if i == start {
            return true;
        }
        i += name[i] as usize + 1;
    }
    i == start
}

/// Lower-case uncompressed wire form of a name.
pub fn name_to_wire(name: &Name) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len() + 1);
    crate::wire::push_lower_wire(name, &mut out);
    out
}

/// The cache key for (name, type).
pub fn key_for(name: &Name, qtype: RecordType) -> Vec<u8> {
    let mut k = name_to_wire(name);
    k.extend_from_slice(&u16::from(qtype).to_be_bytes());
    k
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ByteSize;
    use hickory_proto::rr::rdata::A;
    use std::net::Ipv4Addr;
    use std::str::FromStr;

    fn sections(name: &Name, i: u32) -> Sections {
        let mut r = Record::from_rdata(name.clone(), 3600, RData::A(A(Ipv4Addr::from(i))));
        r.dns_class = hickory_proto::rr::DNSClass::IN;
        Sections {
            answer: vec![r],
            ..Sections::default()
        }
    }

    #[test]
    fn stays_under_max_size_with_200k_names() {
        let max = 4 << 20;
        let cache = AnswerCache::new(&CacheConfig {
            max_size: ByteSize(max),
            ..CacheConfig::default()
        });
        for i in 0..200_000u32 {
            let name = Name::from_str(&format!("host{i}.example.test.")).unwrap();
            let key = key_for(&name, RecordType::A);
            cache.store(&key, &name, RecordType::A, sections(&name, i));
        }
        let (entries, bytes) = cache.usage();
        assert!(bytes <= max, "{bytes} bytes held, bound {max}");
        assert!(entries > 1000 && entries < 200_000, "{entries} entries");
    }

    #[test]
    fn zero_max_size_disables_caching() {
        let cache = AnswerCache::new(&CacheConfig {
            max_size: ByteSize(0),
            ..CacheConfig::default()
        });
        let name = Name::from_str("a.test.").unwrap();
        let key = key_for(&name, RecordType::A);
        assert!(cache
            .store(&key, &name, RecordType::A, sections(&name, 1))
            .is_some());
        assert!(cache.get(&key).is_none());
    }

    #[test]
    fn front_answers_live_entries_until_a_flush() {
        let cache = AnswerCache::new(&CacheConfig::default());
        let mut front = cache.front();
        let name = Name::from_str("www.example.test.").unwrap();
        let key = key_for(&name, RecordType::A);
        let now = Instant::now();
        assert!(cache.get_live(&mut front, &key, now).is_none(), "empty");
        cache.store(&key, &name, RecordType::A, sections(&name, 1));
        let first = cache.get_live(&mut front, &key, now).cloned();
        assert!(first.is_some(), "filled from the cache");
        // Held by the front now: served even after the cache forgets it
        // for a reason other than a flush (here, a direct removal).
        cache
            .answers
            .as_ref()
            .unwrap()
            .remove(&cache.hash_keys.hash_one(&key[..]));
        let held = cache.get_live(&mut front, &key, now).cloned();
        assert!(held.is_some_and(|h| Arc::ptr_eq(&h, first.as_ref().unwrap())));
        cache.store(&key, &name, RecordType::A, sections(&name, 2));
        cache.get_live(&mut front, &key, now);
        cache.flush_name(&name, false);
        assert!(
            cache.get_live(&mut front, &key, now).is_none(),
            "a flush empties the front"
        );
        cache.store(&key, &name, RecordType::A, sections(&name, 3));
        assert!(cache.get_live(&mut front, &key, now).is_some());
        cache.flush_all();
        assert!(cache.get_live(&mut front, &key, now).is_none());
    }

    #[test]
    fn front_never_serves_an_expired_entry() {
        let cache = AnswerCache::new(&CacheConfig::default());
        let mut front = cache.front();
        let name = Name::from_str("short.example.test.").unwrap();
        let key = key_for(&name, RecordType::A);
        let mut s = sections(&name, 1);
        s.answer[0].ttl = 30;
        cache.store(&key, &name, RecordType::A, s);
        let now = Instant::now();
        assert!(cache.get_live(&mut front, &key, now).is_some());
        let later = now + std::time::Duration::from_secs(31);
        assert!(cache.get_live(&mut front, &key, later).is_none());
        assert!(
            cache.get(&key).is_some_and(|e| e.expired(later)),
            "still in the cache for serve-stale, but not live"
        );
    }

    #[test]
    fn front_ways_keep_two_colliding_names() {
        let cache = AnswerCache::new(&CacheConfig {
            // One set: every name collides.
            max_size: ByteSize(FRONT_BYTES_PER_SET),
            ..CacheConfig::default()
        });
        let mut front = cache.front();
        assert_eq!(front.sets.len(), 1);
        let now = Instant::now();
        let keys: Vec<Vec<u8>> = ["a.test.", "b.test.", "c.test."]
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let name = Name::from_str(n).unwrap();
                let key = key_for(&name, RecordType::A);
                cache.store(&key, &name, RecordType::A, sections(&name, i as u32));
                key
            })
            .collect();
        for k in &keys[..2] {
            cache.get_live(&mut front, k, now);
        }
        let set = front.sets.first().unwrap();
        assert!(set.iter().all(|w| w.is_some()), "both ways used");
        for k in &keys {
            let e = cache.get_live(&mut front, k, now).unwrap();
            assert!(e.answers_key(k), "each name gets its own answer");
        }
    }

    #[test]
    fn subtree_flush_respects_label_boundaries() {
        let cache = AnswerCache::new(&CacheConfig::default());
        let names = ["www.example.test.", "example.test.", "wwwexample.test."];
        for (i, n) in names.iter().enumerate() {
            let name = Name::from_str(n).unwrap();
            cache.store(
                &key_for(&name, RecordType::A),
                &name,
                RecordType::A,
                sections(&name, i as u32),
            );
        }
        cache.flush_name(&Name::from_str("example.test.").unwrap(), true);
        let has = |n: &str| {
            cache
                .get(&key_for(&Name::from_str(n).unwrap(), RecordType::A))
                .is_some()
        };
        assert!(!has("www.example.test.") && !has("example.test."));
        assert!(
            has("wwwexample.test."),
            "a different name ending in the same bytes stays"
        );
    }
}
