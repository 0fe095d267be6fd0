//! Micro-benchmarks of the cache-hit fast path: query parse, cache lookup,
//! reply writing, and `Handler::answer_now` end to end (and
//! `answer_now_in`, the UDP listener thread's path with its own state).
//!
//! Run with `cargo bench --bench hot_path`. Each bench measures for 2 s so
//! the whole run takes well under a minute once built.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use resolvd::cache::{key_for, AnswerCache};
use resolvd::config::CacheConfig;
use resolvd::handler::{Handler, HandlerConfig, Step, Transport};
use resolvd::metrics::Metrics;
use resolvd::resolve::{BoxFuture, Resolve};
use resolvd::wire::answer::{ReplyContext, Sections, WireAnswer};
use resolvd::wire::query::Query;
use resolvd::zones::{GeoConfig, LocalZones};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Entries in the cache for the lookup benches (like the dnsperf zone).
const CACHE_ENTRIES: usize = 100_000;

/// A query as `dig` sends it: RD set, one question, an OPT record with
/// payload 1232 and an 8-byte client COOKIE option. The name is mixed case,
/// as a 0x20-randomising client would send it.
fn query_packet(name: &str, id: u16) -> Vec<u8> {
    let mut p = Vec::with_capacity(64);
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&[0x01, 0x20]); // RD, AD
    p.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 1]); // QD=1 AR=1
    for label in name.trim_end_matches('.').split('.') {
        p.push(label.len() as u8);
        p.extend_from_slice(label.as_bytes());
    }
    p.push(0);
    p.extend_from_slice(&1u16.to_be_bytes()); // A
    p.extend_from_slice(&1u16.to_be_bytes()); // IN
                                              // OPT: root owner, type 41, payload 1232, ext-rcode/version/flags 0.
    p.push(0);
    p.extend_from_slice(&41u16.to_be_bytes());
    p.extend_from_slice(&1232u16.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 0]);
    p.extend_from_slice(&12u16.to_be_bytes()); // RDLENGTH
    p.extend_from_slice(&10u16.to_be_bytes()); // COOKIE
    p.extend_from_slice(&8u16.to_be_bytes());
    p.extend_from_slice(&[0x5a, 0x1b, 0x3c, 0x4d, 0x9e, 0x8f, 0x70, 0x61]);
    p
}

/// A positive answer with `n` A records, TTL 3600.
fn sections(name: &Name, n: u8) -> Sections {
    Sections {
        answer: (0..n)
            .map(|i| {
                Record::from_rdata(
                    name.clone(),
                    3600,
                    RData::A(A(Ipv4Addr::new(192, 0, 2, 10 + i))),
                )
            })
            .collect(),
        ..Sections::default()
    }
}

fn name_of(i: usize) -> Name {
    Name::from_str(&format!("h{i}.bench.test.")).expect("valid name")
}

/// A cache holding `CACHE_ENTRIES` two-record answers for h0..hN.bench.test A.
fn filled_cache() -> AnswerCache {
    let rss0 = vm_rss();
    let cache = AnswerCache::new(&CacheConfig::default());
    for i in 0..CACHE_ENTRIES {
        let name = name_of(i);
        let key = key_for(&name, RecordType::A);
        cache
            .store(&key, &name, RecordType::A, sections(&name, 2))
            .expect("stored");
    }
    // Let moka finish its pending inserts so lookups see a settled cache.
    let (entries, weighed) = cache.usage();
    assert_eq!(entries as usize, CACHE_ENTRIES, "cache evicted entries");
    // Printed for the first fill only: later fills reuse freed memory.
    static PRINTED: AtomicBool = AtomicBool::new(false);
    if let (Some(a), Some(b), false) = (rss0, vm_rss(), PRINTED.swap(true, Ordering::Relaxed)) {
        eprintln!(
            "AnswerCache alone: {} resident bytes per entry, {} counted by its weigher ({CACHE_ENTRIES} two-record answers)",
            b.saturating_sub(a) / CACHE_ENTRIES as u64,
            weighed / CACHE_ENTRIES as u64
        );
    }
    cache
}

/// VmRSS of this process in bytes (Linux), for the memory note above.
fn vm_rss() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    kb.split_whitespace()
        .nth(1)?
        .parse::<u64>()
        .ok()
        .map(|k| k * 1024)
}

/// A resolver the cache-hit path must never reach.
struct NeverCalled;

impl Resolve for NeverCalled {
    fn resolve(&self, qname: Name, _qtype: RecordType) -> BoxFuture<'_, Sections> {
        panic!("resolver called for {qname} on the cache-hit path")
    }
}

fn bench_parse(c: &mut Criterion) {
    let pkt = query_packet("wWw.ExAmple.cOm", 0x1234);
    assert!(Query::parse(&pkt).expect("parses").edns.is_some());
    c.bench_function("parse_query", |b| {
        b.iter(|| {
            let q = Query::parse(black_box(&pkt)).expect("parses");
            black_box(q.key().len())
        })
    });
}

fn bench_cache(c: &mut Criterion) {
    let cache = filled_cache();
    let key = key_for(&name_of(54_321), RecordType::A);
    assert!(cache.get(&key).is_some());
    c.bench_function("cache_lookup_hit", |b| {
        b.iter(|| black_box(cache.get(black_box(&key))).is_some())
    });
    // Same, but cycling over every key, so the hash table is walked the way
    // a real client population walks it (cache misses in the CPU caches).
    let keys: Vec<Vec<u8>> = (0..CACHE_ENTRIES)
        .map(|i| key_for(&name_of((i * 7919) % CACHE_ENTRIES), RecordType::A))
        .collect();
    let mut i = 0usize;
    c.bench_function("cache_lookup_hit_spread", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            black_box(cache.get(black_box(&keys[i]))).is_some()
        })
    });
}

fn bench_write_reply(c: &mut Criterion) {
    let name = Name::from_str("www.example.com.").expect("valid name");
    let answer = WireAnswer::encode(&name, RecordType::A, sections(&name, 2)).expect("encodes");
    let pkt = query_packet("wWw.ExAmple.cOm", 0x1234);
    let q = Query::parse(&pkt).expect("parses");
    let ctx = ReplyContext {
        limit: q.udp_limit(),
        our_payload: 1232,
        stale: false,
        cookie: None,
        pad: false,
    };
    let mut out = Vec::with_capacity(4096);
    let now = Instant::now();
    answer.write_reply(&q, now, ctx, &mut out);
    assert_eq!(u16::from_be_bytes([out[6], out[7]]), 2, "two answers");
    assert_eq!(u16::from_be_bytes([out[10], out[11]]), 1, "one OPT");
    c.bench_function("write_reply_hit", |b| {
        b.iter(|| {
            answer.write_reply(black_box(&q), now, ctx, &mut out);
            black_box(out.len())
        })
    });
}

fn bench_answer_now(c: &mut Criterion) {
    let cache = filled_cache();
    // As the daemon runs by default: special-use zones on (test. excluded,
    // as in benches/dnsperf.sh, since the bench names live under it).
    let zones = LocalZones::from_config(&[], &GeoConfig::default(), Path::new("."))
        .expect("empty zones build")
        .with_special_use(&[hickory_proto::rr::Name::from_ascii("test.").expect("name")]);
    let handler = Arc::new(Handler::new(
        HandlerConfig {
            allow: vec!["127.0.0.0/8".parse().expect("prefix")],
            udp_payload_size: 1232,
            max_pending: 10_000,
            cookies: Some(None),
            ratelimit: Default::default(),
        },
        Arc::new(zones),
        cache,
        Arc::new(NeverCalled),
        Arc::new(Metrics::default()),
    ));
    let client: SocketAddr = "127.0.0.1:40000".parse().expect("addr");
    let pkt = query_packet("H54321.bench.TEST", 0x4321);
    let mut out = Vec::with_capacity(4096);
    assert_eq!(
        handler.answer_now(&pkt, client, Transport::Udp, &mut out),
        Step::Reply
    );
    c.bench_function("answer_now_hit", |b| {
        b.iter(|| handler.answer_now(black_box(&pkt), client, Transport::Udp, &mut out))
    });
    // End to end over many names, as a dnsperf run over the hot set does.
    let pkts: Vec<Vec<u8>> = (0..CACHE_ENTRIES)
        .map(|i| query_packet(&format!("h{}.bench.test", (i * 7919) % CACHE_ENTRIES), 7))
        .collect();
    let mut i = 0usize;
    c.bench_function("answer_now_hit_spread", |b| {
        b.iter(|| {
            i = (i + 1) % pkts.len();
            handler.answer_now(black_box(&pkts[i]), client, Transport::Udp, &mut out)
        })
    });
    // As a UDP listener thread answers: its own counts, its front of the
    // cache, one clock reading per batch (here per 32 queries).
    let mut local = handler.local();
    c.bench_function("answer_now_in_hit", |b| {
        b.iter(|| {
            handler.answer_now_in(
                black_box(&pkt),
                client,
                Transport::Udp,
                &mut out,
                Some(&mut local),
            )
        })
    });
    let hot: Vec<&Vec<u8>> = pkts.iter().take(1000).collect();
    let mut n = 0usize;
    c.bench_function("answer_now_in_hit_1000_names", |b| {
        b.iter(|| {
            n = n.wrapping_add(1);
            if n.is_multiple_of(32) {
                local.now = Instant::now();
            }
            let pkt = hot.get(n % hot.len()).map_or(&[][..], |p| &p[..]);
            handler.answer_now_in(
                black_box(pkt),
                client,
                Transport::Udp,
                &mut out,
                Some(&mut local),
            )
        })
    });
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50)
}

criterion_group! {
    name = hot_path;
    config = config();
    targets = bench_parse, bench_cache, bench_write_reply, bench_answer_now
}
criterion_main!(hot_path);
