//! How many upstream queries resolution costs. These tests pin the counts
//! as numbers, so a change that makes the walk chattier fails here; README
//! quotes them. Uses 127.195.0.0/24 – 127.197.0.0/24.

mod support;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use std::time::{Duration, Instant};
use support::under_test::{config_for, root_zone, start};
use support::*;

/// The measuring set's world:
/// - root .1 → test. (.2), other. (.5)
/// - test. → example.test. (.3, glue), glueless.test. (NS ns.corp.other.,
///   no glue), deadfirst.test. (ns1 .11 silent, ns2 .12), lamefirst.test.
///   (ns1 .13 not authoritative, ns2 .14)
/// - example.test. → sub.example.test. (.4, glue)
/// - other. → corp.other. (.8), which also holds ns.corp.other. (.9)
fn world(n: u8) -> Vec<ServerSpec> {
    let root = root_zone(n, &[("test", 2), ("other", 5)]);
    let tld = format!(
        "$ORIGIN test.\n$TTL 86400\n@ SOA ns1 hostmaster 1 3600 600 86400 300\n@ NS ns1\n\
         ns1 A 127.{n}.0.2\n\
         example NS ns1.example\nns1.example A 127.{n}.0.3\n\
         glueless NS ns.corp.other.\n\
         deadfirst NS ns1.deadfirst\ndeadfirst NS ns2.deadfirst\n\
         ns1.deadfirst A 127.{n}.0.11\nns2.deadfirst A 127.{n}.0.12\n\
         lamefirst NS ns1.lamefirst\nlamefirst NS ns2.lamefirst\n\
         ns1.lamefirst A 127.{n}.0.13\nns2.lamefirst A 127.{n}.0.14\n"
    );
    let example = format!(
        "$ORIGIN example.test.\n$TTL 300\n@ SOA ns1 hostmaster 1 3600 600 86400 120\n\
         @ NS ns1\nns1 A 127.{n}.0.3\nwww A 192.0.2.10\n@ MX 10 mail\nmail A 192.0.2.25\n\
         to-other CNAME www.corp.other.\nsub NS ns1.sub\nns1.sub A 127.{n}.0.4\n"
    );
    let sub = format!(
        "$ORIGIN sub.example.test.\n$TTL 300\n@ SOA ns1 hostmaster 1 3600 600 86400 120\n\
         @ NS ns1\nns1 A 127.{n}.0.4\nwww.ent A 192.0.2.44\n"
    );
    let other = format!(
        "$ORIGIN other.\n$TTL 86400\n@ SOA ns1 hostmaster 1 3600 600 86400 300\n@ NS ns1\n\
         ns1 A 127.{n}.0.5\ncorp NS ns1.corp\nns1.corp A 127.{n}.0.8\n"
    );
    let corp = format!(
        "$ORIGIN corp.other.\n$TTL 300\n@ SOA ns1 hostmaster 1 3600 600 86400 120\n@ NS ns1\n\
         ns1 A 127.{n}.0.8\nns A 127.{n}.0.9\nwww A 192.0.2.80\n"
    );
    let glueless =
        "$ORIGIN glueless.test.\n$TTL 300\n@ SOA ns.corp.other. h 1 3600 600 86400 120\n\
         @ NS ns.corp.other.\nhost A 192.0.2.90\n";
    let two = |zone: &str| {
        format!(
            "$ORIGIN {zone}.test.\n$TTL 300\n@ SOA ns1 h 1 3600 600 86400 120\n@ NS ns1\n@ NS ns2\n\
             ns1 A 127.{n}.0.{a}\nns2 A 127.{n}.0.{b}\nwww A 192.0.2.{c}\n",
            a = if zone == "deadfirst" { 11 } else { 13 },
            b = if zone == "deadfirst" { 12 } else { 14 },
            c = if zone == "deadfirst" { 111 } else { 113 },
        )
    };
    let (dead, lame) = (two("deadfirst"), two("lamefirst"));
    vec![
        ServerSpec::new("a.root-servers.test.", &format!("127.{n}.0.1"), &[&root]).root(),
        ServerSpec::new("ns1.test.", &format!("127.{n}.0.2"), &[&tld]),
        ServerSpec::new("ns1.example.test.", &format!("127.{n}.0.3"), &[&example]),
        ServerSpec::new("ns1.sub.example.test.", &format!("127.{n}.0.4"), &[&sub]),
        ServerSpec::new("ns1.other.", &format!("127.{n}.0.5"), &[&other]),
        ServerSpec::new("ns1.corp.other.", &format!("127.{n}.0.8"), &[&corp]),
        ServerSpec::new("ns.corp.other.", &format!("127.{n}.0.9"), &[glueless]),
        ServerSpec::new("ns1.deadfirst.test.", &format!("127.{n}.0.11"), &[&dead]),
        ServerSpec::new("ns2.deadfirst.test.", &format!("127.{n}.0.12"), &[&dead]),
        ServerSpec::new("ns1.lamefirst.test.", &format!("127.{n}.0.13"), &[&lame]),
        ServerSpec::new("ns2.lamefirst.test.", &format!("127.{n}.0.14"), &[&lame]),
    ]
}

/// The set the issue names, asked one at a time of a fresh resolver:
/// working glue, a minimised path through a cut and an empty
/// non-terminal, a glueless delegation under
/// another TLD, a CNAME chain across two TLDs, an MX, an NXDOMAIN two
/// labels below the zone's last name, a zone
/// whose first NS is dead and one whose first NS is lame.
const SET: &[(&str, RecordType, ResponseCode)] = &[
    ("www.example.test.", RecordType::A, ResponseCode::NoError),
    (
        "www.ent.sub.example.test.",
        RecordType::A,
        ResponseCode::NoError,
    ),
    ("host.glueless.test.", RecordType::A, ResponseCode::NoError),
    (
        "to-other.example.test.",
        RecordType::A,
        ResponseCode::NoError,
    ),
    ("example.test.", RecordType::MX, ResponseCode::NoError),
    (
        "x.nope.example.test.",
        RecordType::A,
        ResponseCode::NXDomain,
    ),
    ("www.deadfirst.test.", RecordType::A, ResponseCode::NoError),
    ("www.lamefirst.test.", RecordType::A, ResponseCode::NoError),
];

/// Upstream queries resolvd sends for [`SET`] (Unbound 1.17 sends 27 for
/// the same kind of set). The walk is deterministic here: servers never
/// measured are asked in address order, so the dead and lame servers are
/// the first asked in their zones.
const SET_QUERIES: usize = 22;

#[tokio::test(flavor = "multi_thread")]
async fn measuring_set_costs_at_most_the_pinned_number_of_upstream_queries() {
    let sim = Sim::start(world(195)).await;
    sim.server("ns1.deadfirst.test.").set_faults(Faults {
        silent: true,
        ..Default::default()
    });
    sim.server("ns1.lamefirst.test.").set_faults(Faults {
        lame_types: vec![RecordType::A, RecordType::AAAA, RecordType::NS],
        ..Default::default()
    });
    let (_d, addr) = start(&config_for(&sim)).await;
    let mut per_name = Vec::new();
    for (name, t, rcode) in SET {
        let before = sim.total_queries();
        let m = ask(addr, name, *t).await;
        assert_eq!(m.metadata.response_code, *rcode, "{name} {t}: {m:?}");
        if *rcode == ResponseCode::NoError {
            assert!(!m.answers.is_empty(), "{name} {t}: {m:?}");
        }
        per_name.push((*name, sim.total_queries() - before));
    }
    let total = sim.total_queries();
    eprintln!("upstream queries for the measuring set: {total} {per_name:?}");
    assert!(
        total <= SET_QUERIES,
        "{total} upstream queries (at most {SET_QUERIES}): {per_name:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn nxns_delegation_costs_at_most_six_upstream_queries() {
    let n = 196;
    let root = root_zone(n, &[("test", 2), ("other", 5)]);
    let mut tld = format!(
        "$ORIGIN test.\n$TTL 86400\n@ SOA ns1 hostmaster 1 3600 600 86400 300\n@ NS ns1\n\
         ns1 A 127.{n}.0.2\n"
    );
    // 40 glueless NS names, all under a zone that says NXDOMAIN to each.
    for i in 0..40 {
        tld.push_str(&format!("explode NS ns{i}.sink.other.\n"));
    }
    let other = format!(
        "$ORIGIN other.\n$TTL 86400\n@ SOA ns1 hostmaster 1 3600 600 86400 300\n@ NS ns1\n\
         ns1 A 127.{n}.0.5\nsink NS ns1.sink\nns1.sink A 127.{n}.0.10\n"
    );
    let sink = "$ORIGIN sink.other.\n$TTL 300\n@ SOA ns1 h 1 3600 600 86400 120\n@ NS ns1\n";
    let sim = Sim::start(vec![
        ServerSpec::new("a.root-servers.test.", &format!("127.{n}.0.1"), &[&root]).root(),
        ServerSpec::new("ns1.test.", &format!("127.{n}.0.2"), &[&tld]),
        ServerSpec::new("ns1.other.", &format!("127.{n}.0.5"), &[&other]),
        ServerSpec::new("ns1.sink.other.", &format!("127.{n}.0.10"), &[sink]),
    ])
    .await;
    let (_d, addr) = start(&config_for(&sim)).await;
    let started = Instant::now();
    let m = ask(addr, "x.explode.test.", RecordType::A).await;
    let took = started.elapsed();
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    let first = sim.total_queries();
    // A second name under the same delegation, with the walk warm.
    let m = ask(addr, "y.explode.test.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    let second = sim.total_queries() - first;
    eprintln!("NXNS delegation: {first} upstream queries cold, {second} warm, {took:?}");
    assert!(first <= 6, "{first} upstream queries for one client query");
    assert!(second <= 6, "{second} upstream queries for the second");
    assert!(took < Duration::from_secs(1), "took {took:?}");
}
