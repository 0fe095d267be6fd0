//! The answer cache seen from a client: TTL aging, expiry, clamping,
//! negative caching, coalescing, prefetch, serve-stale, credibility, flush.
//! Each test uses its own 127.N.0.0/24 block (N in 150..200).

mod support;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, RecordType};
use resolvd::config::Dur;
use std::time::Duration;
use support::under_test::{config_for, root_zone, start};
use support::*;

const T: u64 = 6000;

fn world(n: u8) -> Vec<ServerSpec> {
    let root = root_zone(n, &[("test", 2)]);
    let tld = format!(
        "$ORIGIN test.
$TTL 86400
@ SOA ns1 hostmaster 1 3600 600 86400 300
@ NS ns1
ns1 A 127.{n}.0.2
example NS ns1.example
ns1.example A 127.{n}.0.3
"
    );
    let example = format!(
        "$ORIGIN example.test.
$TTL 300
@ 300 SOA ns1 hostmaster 1 3600 600 86400 120
@ NS ns1
ns1 A 127.{n}.0.3
www 300 A 192.0.2.10
short 2 A 192.0.2.11
tiny 1 A 192.0.2.12
hot 10 A 192.0.2.13
alias 300 CNAME www
"
    );
    vec![
        ServerSpec::new("a.root-servers.test.", &format!("127.{n}.0.1"), &[&root]).root(),
        ServerSpec::new("ns1.test.", &format!("127.{n}.0.2"), &[&tld]),
        ServerSpec::new("ns1.example.test.", &format!("127.{n}.0.3"), &[&example]),
    ]
}

fn seen(sim: &Sim, name: &str) -> usize {
    sim.server("ns1.example.test.")
        .queries()
        .iter()
        .filter(|q| q.name.eq_ignore_ascii_case(name))
        .count()
}

fn ttl(m: &Message) -> u32 {
    m.answers.first().map(|r| r.ttl).expect("an answer")
}

#[tokio::test(flavor = "multi_thread")]
async fn repeated_query_is_answered_from_cache_with_ttl_counting_down() {
    let sim = Sim::start(world(150)).await;
    let (_d, addr) = start(&config_for(&sim)).await;
    let first = ask(addr, "www.example.test.", RecordType::A).await;
    assert_eq!(ttl(&first), 300);
    let upstream = sim.total_queries();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let second = ask(addr, "www.example.test.", RecordType::A).await;
    assert_eq!(sim.total_queries(), upstream, "nothing sent upstream");
    let t = ttl(&second);
    assert!((297..=298).contains(&t), "TTL aged by the 2 s waited: {t}");
    assert_eq!(
        second.answers,
        &first
            .answers
            .iter()
            .map(|r| {
                let mut r = r.clone();
                r.ttl = t;
                r
            })
            .collect::<Vec<_>>()[..]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn entry_expires_at_its_ttl() {
    let sim = Sim::start(world(151)).await;
    let mut cfg = config_for(&sim);
    cfg.cache.serve_stale = false;
    let (_d, addr) = start(&cfg).await;
    ask(addr, "short.example.test.", RecordType::A).await;
    let m = ask(addr, "short.example.test.", RecordType::A).await;
    assert!(ttl(&m) >= 1, "live entries never show TTL 0");
    assert_eq!(seen(&sim, "short.example.test."), 1);
    tokio::time::sleep(Duration::from_millis(2300)).await;
    ask(addr, "short.example.test.", RecordType::A).await;
    assert_eq!(
        seen(&sim, "short.example.test."),
        2,
        "asked again after expiry"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn ttls_are_clamped_to_min_and_max() {
    let sim = Sim::start(world(152)).await;
    let mut cfg = config_for(&sim);
    cfg.cache.max_ttl = 60;
    cfg.cache.min_ttl = 5;
    let (_d, addr) = start(&cfg).await;
    ask(addr, "www.example.test.", RecordType::A).await;
    let m = ask(addr, "www.example.test.", RecordType::A).await;
    assert!(ttl(&m) <= 60, "max_ttl caps: {}", ttl(&m));
    ask(addr, "tiny.example.test.", RecordType::A).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let m = ask(addr, "tiny.example.test.", RecordType::A).await;
    assert!(ttl(&m) >= 3, "min_ttl keeps it: {}", ttl(&m));
    assert_eq!(seen(&sim, "tiny.example.test."), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn negative_answers_are_cached_with_soa_ttl() {
    let sim = Sim::start(world(153)).await;
    let (_d, addr) = start(&config_for(&sim)).await;
    let nx = ask(addr, "nope.example.test.", RecordType::A).await;
    assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
    let soa_ttl = nx.authorities[0].ttl;
    assert_eq!(soa_ttl, 120, "min(SOA TTL 300, MINIMUM 120)");
    let again = ask(addr, "nope.example.test.", RecordType::A).await;
    assert_eq!(again.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(again.authorities[0].record_type(), RecordType::SOA);
    assert_eq!(seen(&sim, "nope.example.test."), 1);
    // RFC 8020: below an NXDOMAIN nothing exists either.
    let below = ask(addr, "deeper.nope.example.test.", RecordType::AAAA).await;
    assert_eq!(below.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(seen(&sim, "deeper.nope.example.test."), 0);
    // NODATA is cached too.
    let nodata = ask(addr, "www.example.test.", RecordType::TXT).await;
    assert!(nodata.answers.is_empty());
    assert_eq!(nodata.authorities[0].record_type(), RecordType::SOA);
    ask(addr, "www.example.test.", RecordType::TXT).await;
    let txt_queries = sim
        .server("ns1.example.test.")
        .queries()
        .iter()
        .filter(|q| q.qtype == RecordType::TXT)
        .count();
    assert_eq!(txt_queries, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_identical_queries_cause_one_upstream_query() {
    let sim = Sim::start(world(154)).await;
    sim.server("ns1.example.test.").set_faults(Faults {
        delay_ms: 200,
        ..Default::default()
    });
    let (_d, addr) = start(&config_for(&sim)).await;
    let mut tasks = Vec::new();
    for i in 0..100 {
        tasks.push(tokio::spawn(async move {
            // Mixed letter case: each client gets its own question back.
            let name = if i % 2 == 0 {
                "www.example.test."
            } else {
                "WWW.Example.TEST."
            };
            (name, query_udp(addr, name, RecordType::A, T).await)
        }));
    }
    for t in tasks {
        let (name, m) = t.await.unwrap();
        let m = m.expect("answered");
        assert_eq!(m.answers.len(), 1);
        assert_eq!(m.queries[0].name().to_string(), name);
    }
    assert_eq!(seen(&sim, "www.example.test."), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn prefetch_refreshes_a_hot_entry_before_it_expires() {
    let sim = Sim::start(world(155)).await;
    let (_d, addr) = start(&config_for(&sim)).await;
    ask(addr, "hot.example.test.", RecordType::A).await;
    // Hit it through its life; in its last second (10% of 10 s) a hit
    // starts the refresh.
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let m = ask(addr, "hot.example.test.", RecordType::A).await;
        assert_eq!(m.answers.len(), 1, "clients never see a miss");
    }
    assert!(seen(&sim, "hot.example.test.") >= 2, "refreshed upstream");
}

#[tokio::test(flavor = "multi_thread")]
async fn stale_answer_is_served_when_servers_go_silent_until_stale_max() {
    let sim = Sim::start(world(156)).await;
    let mut cfg = config_for(&sim);
    cfg.cache.stale_max = Dur::secs(3);
    cfg.cache.stale_answer_timeout = Dur::millis(300);
    cfg.resolver.query_deadline = Dur::secs(1);
    let (_d, addr) = start(&cfg).await;
    ask(addr, "tiny.example.test.", RecordType::A).await;
    for s in sim.servers() {
        s.set_faults(Faults {
            silent: true,
            ..Default::default()
        });
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let q = make_query("tiny.example.test.", RecordType::A, true);
    let m = exchange_udp(addr, &q, T).await.unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(ttl(&m), 30, "stale TTL");
    let ede = m.edns.as_ref().and_then(|e| {
        e.option(hickory_proto::rr::rdata::opt::EdnsCode::Unknown(15))
            .cloned()
    });
    match ede {
        Some(hickory_proto::rr::rdata::opt::EdnsOption::Unknown(15, data)) => {
            assert_eq!(&data[..2], &[0, 3])
        }
        other => panic!("EDE 3 expected, got {other:?}"),
    }
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let m = ask(addr, "tiny.example.test.", RecordType::A).await;
    assert_eq!(
        m.metadata.response_code,
        ResponseCode::ServFail,
        "past stale_max"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn glue_is_never_returned_as_an_answer() {
    let sim = Sim::start(world(157)).await;
    let (_d, addr) = start(&config_for(&sim)).await;
    // Learns ns1.example.test's address as glue from the test. referral.
    ask(addr, "www.example.test.", RecordType::A).await;
    let m = ask(addr, "ns1.example.test.", RecordType::A).await;
    // The authoritative copy (TTL 300), not the glue (TTL 86400).
    assert!(ttl(&m) <= 300, "TTL {}", ttl(&m));
    assert!(m.authorities.is_empty() && m.additionals.is_empty());
    assert_eq!(seen(&sim, "ns1.example.test."), 1, "asked the zone itself");
}

#[tokio::test(flavor = "multi_thread")]
async fn cached_cname_target_is_answered_from_rrsets() {
    let sim = Sim::start(world(158)).await;
    let (_d, addr) = start(&config_for(&sim)).await;
    let m = ask(addr, "alias.example.test.", RecordType::A).await;
    assert_eq!(m.answers.len(), 2);
    let before = sim.total_queries();
    let m = ask(addr, "www.example.test.", RecordType::A).await;
    assert!(matches!(m.answers[0].data, RData::A(_)));
    assert_eq!(
        sim.total_queries(),
        before,
        "the chain's tail was already known"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn flush_removes_what_it_names() {
    let sim = Sim::start(world(159)).await;
    let (d, addr) = start(&config_for(&sim)).await;
    // Twice: the second is a cache hit, which the UDP listener thread
    // also keeps in its own front of the cache, and a flush must reach.
    for n in ["www.example.test.", "short.example.test."] {
        ask(addr, n, RecordType::A).await;
        ask(addr, n, RecordType::A).await;
    }
    let h = d.handler();
    assert!(resolvd::control::execute(h, "flush www.example.test.").starts_with("ok"));
    ask(addr, "www.example.test.", RecordType::A).await;
    ask(addr, "short.example.test.", RecordType::A).await;
    assert_eq!(seen(&sim, "www.example.test."), 2, "flushed name re-asked");
    assert_eq!(seen(&sim, "short.example.test."), 1, "others kept");
    assert!(resolvd::control::execute(h, "flush example.test. subtree").starts_with("ok"));
    ask(addr, "short.example.test.", RecordType::A).await;
    assert_eq!(seen(&sim, "short.example.test."), 2, "subtree flushed");
    let stats = resolvd::control::execute(h, "stats");
    assert!(stats.contains("hits "), "{stats}");
}

#[tokio::test(flavor = "multi_thread")]
async fn resolution_failure_is_remembered_briefly() {
    let sim = Sim::start(world(160)).await;
    sim.server("ns1.example.test.").set_faults(Faults {
        rcode: Some(ResponseCode::Refused),
        ..Default::default()
    });
    let mut cfg = config_for(&sim);
    cfg.cache.servfail_ttl = 2;
    let (_d, addr) = start(&cfg).await;
    let m = ask(addr, "www.example.test.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    let asked = seen(&sim, "www.example.test.");
    assert!(asked >= 1);
    let again = ask(addr, "www.example.test.", RecordType::A).await;
    assert_eq!(again.metadata.response_code, ResponseCode::ServFail);
    assert_eq!(
        seen(&sim, "www.example.test."),
        asked,
        "the broken zone is not hammered"
    );
    sim.server("ns1.example.test.")
        .set_faults(Faults::default());
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let later = ask(addr, "www.example.test.", RecordType::A).await;
    assert_eq!(
        later.metadata.response_code,
        ResponseCode::NoError,
        "retried after servfail_ttl"
    );
}
