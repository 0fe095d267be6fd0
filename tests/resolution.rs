//! Iterative resolution against the simulated hierarchy: each test asks
//! resolvd a question and checks both the reply and what the servers saw.
//! Each test uses its own 127.N.0.0/24 block (N ≥ 100).

mod support;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{RData, RecordType};
use std::time::{Duration, Instant};
use support::under_test::{config_for, root_zone, start};
use support::*;

const T: u64 = 6000;

/// root .1 → test. .2 → example.test. (.3 and .6) → sub.example.test. .4
///                       → glueless.test. (NS ns.corp.other., at .9)
///                       → a.test./b.test. (glueless cycle), explode.test.
/// root .1 → other. .5 → corp.other. .8
fn world(n: u8) -> Vec<ServerSpec> {
    let root = root_zone(n, &[("test", 2), ("other", 5)]);
    let mut tld = format!(
        "$ORIGIN test.
$TTL 86400
@ SOA ns1 hostmaster 1 3600 600 86400 300
@ NS ns1
ns1 A 127.{n}.0.2
example NS ns1.example
example NS ns2.example
ns1.example A 127.{n}.0.3
ns2.example A 127.{n}.0.6
glueless NS ns.corp.other.
a NS ns.b.test.
b NS ns.a.test.
"
    );
    for i in 0..20 {
        tld.push_str(&format!("explode NS ns{i}.sink.other.\n"));
    }
    let example = format!(
        "$ORIGIN example.test.
$TTL 300
@ SOA ns1 hostmaster 1 3600 600 86400 120
@ NS ns1
@ NS ns2
ns1 A 127.{n}.0.3
ns2 A 127.{n}.0.6
www A 192.0.2.10
www AAAA 2001:db8::10
@ MX 10 mail
mail A 192.0.2.25
@ TXT \"v=spf1 -all\"
_sip._udp SRV 10 20 5060 sip
sip A 192.0.2.30
to-other CNAME www.corp.other.
loop1 CNAME loop2
loop2 CNAME loop1
sub NS ns1.sub
sub DS 12345 8 2 0123456789abcdef
ns1.sub A 127.{n}.0.4
dn DNAME corp.other.
"
    );
    let sub = format!(
        "$ORIGIN sub.example.test.
$TTL 300
@ SOA ns1 hostmaster 1 3600 600 86400 120
@ NS ns1
ns1 A 127.{n}.0.4
host.deep A 192.0.2.44
"
    );
    let other = format!(
        "$ORIGIN other.
$TTL 86400
@ SOA ns1 hostmaster 1 3600 600 86400 300
@ NS ns1
ns1 A 127.{n}.0.5
corp NS ns1.corp
ns1.corp A 127.{n}.0.8
sink NS ns1.sink
ns1.sink A 127.{n}.0.10
"
    );
    let corp = format!(
        "$ORIGIN corp.other.
$TTL 300
@ SOA ns1 hostmaster 1 3600 600 86400 120
@ NS ns1
ns1 A 127.{n}.0.8
www A 192.0.2.80
ns A 127.{n}.0.9
"
    );
    let glueless = "$ORIGIN glueless.test.
$TTL 300
@ SOA ns.corp.other. hostmaster 1 3600 600 86400 120
@ NS ns.corp.other.
host A 192.0.2.90
";
    let sink = "$ORIGIN sink.other.
$TTL 300
@ SOA ns1 hostmaster 1 3600 600 86400 120
@ NS ns1
";
    vec![
        ServerSpec::new("a.root-servers.test.", &format!("127.{n}.0.1"), &[&root]).root(),
        ServerSpec::new("ns1.test.", &format!("127.{n}.0.2"), &[&tld]),
        ServerSpec::new("ns1.example.test.", &format!("127.{n}.0.3"), &[&example]),
        ServerSpec::new("ns1.sub.example.test.", &format!("127.{n}.0.4"), &[&sub]),
        ServerSpec::new("ns1.other.", &format!("127.{n}.0.5"), &[&other]),
        ServerSpec::new("ns2.example.test.", &format!("127.{n}.0.6"), &[&example]),
        ServerSpec::new("ns1.corp.other.", &format!("127.{n}.0.8"), &[&corp]),
        ServerSpec::new("ns.corp.other.", &format!("127.{n}.0.9"), &[glueless]),
        ServerSpec::new("ns1.sink.other.", &format!("127.{n}.0.10"), &[sink]),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn common_types_are_answered() {
    let sim = Sim::start(world(100)).await;
    let (_d, addr) = start(&config_for(&sim)).await;
    let a = ask(addr, "www.example.test.", RecordType::A).await;
    assert_eq!(a.metadata.response_code, ResponseCode::NoError);
    assert!(a.metadata.recursion_available && !a.metadata.authoritative);
    assert_eq!(addrs(&a), vec!["192.0.2.10"]);
    let aaaa = ask(addr, "www.example.test.", RecordType::AAAA).await;
    assert_eq!(addrs(&aaaa), vec!["2001:db8::10"]);
    for t in [
        RecordType::MX,
        RecordType::NS,
        RecordType::TXT,
        RecordType::SOA,
    ] {
        let m = ask(addr, "example.test.", t).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{t}");
        assert!(!m.answers.is_empty(), "{t} has an answer");
        assert!(m.answers.iter().all(|r| r.record_type() == t), "{t}");
    }
    let ns = ask(addr, "example.test.", RecordType::NS).await;
    assert_eq!(ns.answers.len(), 2);
    let srv = ask(addr, "_sip._udp.example.test.", RecordType::SRV).await;
    match srv.answers.first().map(|r| &r.data) {
        Some(RData::SRV(s)) => assert_eq!(s.port, 5060),
        other => panic!("no SRV: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn cname_chain_crosses_tlds() {
    let sim = Sim::start(world(101)).await;
    let (_d, addr) = start(&config_for(&sim)).await;
    let m = ask(addr, "to-other.example.test.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    let types: Vec<RecordType> = m.answers.iter().map(|r| r.record_type()).collect();
    assert_eq!(types, vec![RecordType::CNAME, RecordType::A]);
    assert_eq!(addrs(&m), vec!["192.0.2.80"]);
    assert!(!sim.server("ns1.corp.other.").queries().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn cname_loop_gives_servfail() {
    let sim = Sim::start(world(102)).await;
    let (_d, addr) = start(&config_for(&sim)).await;
    let m = ask(addr, "loop1.example.test.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
}

#[tokio::test(flavor = "multi_thread")]
async fn glueless_ns_under_another_tld_is_resolved() {
    let sim = Sim::start(world(103)).await;
    let (_d, addr) = start(&config_for(&sim)).await;
    let m = ask(addr, "host.glueless.test.", RecordType::A).await;
    assert_eq!(addrs(&m), vec!["192.0.2.90"]);
    // The NS name was resolved through other. → corp.other.
    assert!(sim
        .server("ns1.corp.other.")
        .queries()
        .iter()
        .any(|q| q.name.eq_ignore_ascii_case("ns.corp.other.")));
}

#[tokio::test(flavor = "multi_thread")]
async fn out_of_bailiwick_additional_is_neither_used_nor_returned() {
    let mut w = world(104);
    // The test. server tries to plant an address for a name in other.
    w[1] = w[1]
        .clone()
        .extra_additional("www.corp.other. 300 IN A 6.6.6.6");
    let sim = Sim::start(w).await;
    let (_d, addr) = start(&config_for(&sim)).await;
    let first = ask(addr, "www.example.test.", RecordType::A).await;
    assert_eq!(addrs(&first), vec!["192.0.2.10"]);
    assert!(first
        .additionals
        .iter()
        .all(|r| r.record_type() != RecordType::A));
    let m = ask(addr, "www.corp.other.", RecordType::A).await;
    assert_eq!(addrs(&m), vec!["192.0.2.80"]);
    assert!(
        !sim.server("ns1.corp.other.").queries().is_empty(),
        "asked the real server"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn dead_first_server_falls_over_to_second() {
    let sim = Sim::start(world(105)).await;
    sim.server("ns1.example.test.").set_faults(Faults {
        silent: true,
        ..Default::default()
    });
    let (_d, addr) = start(&config_for(&sim)).await;
    for name in ["www.example.test.", "mail.example.test."] {
        let m = ask(addr, name, RecordType::A).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{name}");
        assert_eq!(m.answers.len(), 1);
    }
    assert!(!sim.server("ns2.example.test.").queries().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn refusing_server_is_skipped() {
    let sim = Sim::start(world(106)).await;
    sim.server("ns2.example.test.").set_faults(Faults {
        rcode: Some(ResponseCode::Refused),
        ..Default::default()
    });
    let (_d, addr) = start(&config_for(&sim)).await;
    for name in [
        "www.example.test.",
        "mail.example.test.",
        "sip.example.test.",
    ] {
        let m = ask(addr, name, RecordType::A).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{name}");
    }
    // Once marked lame, ns2 is not asked for every name.
    let refused = sim.server("ns2.example.test.").queries().len();
    assert!(refused <= 2, "lame server asked {refused} times");
}

#[tokio::test(flavor = "multi_thread")]
async fn truncated_udp_reply_is_retried_over_tcp() {
    let sim = Sim::start(world(107)).await;
    for s in ["ns1.example.test.", "ns2.example.test."] {
        sim.server(s).set_faults(Faults {
            truncate_udp: true,
            ..Default::default()
        });
    }
    let (_d, addr) = start(&config_for(&sim)).await;
    let m = ask(addr, "www.example.test.", RecordType::A).await;
    assert_eq!(addrs(&m), vec!["192.0.2.10"]);
    let tcp = sim
        .servers()
        .iter()
        .flat_map(|s| s.queries())
        .filter(|q| q.tcp && q.name.eq_ignore_ascii_case("www.example.test."))
        .count();
    assert_eq!(tcp, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_reply_with_wrong_id_is_ignored() {
    let sim = Sim::start(world(108)).await;
    for s in ["ns1.example.test.", "ns2.example.test."] {
        sim.server(s).set_faults(Faults {
            wrong_id: true,
            also_correct: true,
            ..Default::default()
        });
    }
    let mut cfg = config_for(&sim);
    cfg.resolver.qname_minimisation = false;
    let (_d, addr) = start(&cfg).await;
    let m = ask(addr, "www.example.test.", RecordType::A).await;
    assert_eq!(addrs(&m), vec!["192.0.2.10"]);
    // The forgery arrived first and was skipped; the real reply, on the same
    // exchange, was taken: one query, no retry.
    let asked: usize = ["ns1.example.test.", "ns2.example.test."]
        .iter()
        .map(|s| sim.server(s).queries().len())
        .sum();
    assert_eq!(asked, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_reply_alone_times_out_to_the_other_server() {
    let sim = Sim::start(world(109)).await;
    sim.server("ns1.example.test.").set_faults(Faults {
        wrong_id: true,
        ..Default::default()
    });
    sim.server("ns2.example.test.").set_faults(Faults {
        wrong_id: true,
        ..Default::default()
    });
    let (_d, addr) = start(&config_for(&sim)).await;
    let m = ask(addr, "www.example.test.", RecordType::A).await;
    assert_eq!(
        m.metadata.response_code,
        ResponseCode::ServFail,
        "forged data never accepted"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn server_rejecting_edns_is_asked_without_it() {
    let sim = Sim::start(world(110)).await;
    for s in ["ns1.example.test.", "ns2.example.test."] {
        sim.server(s).set_faults(Faults {
            formerr_on_edns: true,
            ..Default::default()
        });
    }
    let (_d, addr) = start(&config_for(&sim)).await;
    let m = ask(addr, "www.example.test.", RecordType::A).await;
    assert_eq!(addrs(&m), vec!["192.0.2.10"]);
    let seen: Vec<SeenQuery> = ["ns1.example.test.", "ns2.example.test."]
        .iter()
        .flat_map(|s| sim.server(s).queries())
        .collect();
    assert!(seen.iter().any(|q| !q.edns), "retried without EDNS");
}

#[tokio::test(flavor = "multi_thread")]
async fn qname_minimisation_shows_root_only_the_tld() {
    let sim = Sim::start(world(111)).await;
    let (_d, addr) = start(&config_for(&sim)).await;
    let m = ask(addr, "host.deep.sub.example.test.", RecordType::A).await;
    assert_eq!(addrs(&m), vec!["192.0.2.44"]);
    let root_saw: Vec<String> = sim
        .server("a.root-servers.test.")
        .queries()
        .iter()
        .map(|q| q.name.to_ascii_lowercase())
        .collect();
    assert!(
        root_saw.iter().all(|n| n == "test." || n == "."),
        "root saw {root_saw:?}"
    );
    let tld_saw: Vec<String> = sim
        .server("ns1.test.")
        .queries()
        .iter()
        .map(|q| q.name.to_ascii_lowercase())
        .collect();
    assert!(
        tld_saw.iter().all(|n| n == "example.test."),
        "tld saw {tld_saw:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn glueless_cycle_is_stopped_by_budgets() {
    let sim = Sim::start(world(112)).await;
    let (_d, addr) = start(&config_for(&sim)).await;
    let started = Instant::now();
    let m = ask(addr, "www.a.test.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    assert!(started.elapsed() < Duration::from_secs(6));
    assert!(sim.total_queries() <= 50, "sent {}", sim.total_queries());
}

#[tokio::test(flavor = "multi_thread")]
async fn ns_explosion_is_bounded() {
    let sim = Sim::start(world(113)).await;
    let (_d, addr) = start(&config_for(&sim)).await;
    let m = ask(addr, "x.explode.test.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    // 20 NS names, each nonexistent under sink.other.: at most
    // max_ns_resolutions of them are chased.
    let sink = sim.server("ns1.sink.other.").queries().len();
    assert!(sink <= 8, "sink asked {sink} times");
    assert!(sim.total_queries() <= 50);
}

#[tokio::test(flavor = "multi_thread")]
async fn ns_at_apex_comes_from_the_child() {
    let sim = Sim::start(world(114)).await;
    let (_d, addr) = start(&config_for(&sim)).await;
    let m = ask(addr, "sub.example.test.", RecordType::NS).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(m.answers.len(), 1);
    assert!(sim
        .server("ns1.sub.example.test.")
        .queries()
        .iter()
        .any(|q| q.qtype == RecordType::NS && q.name.eq_ignore_ascii_case("sub.example.test.")));
}

#[tokio::test(flavor = "multi_thread")]
async fn nxdomain_and_nodata_carry_the_soa() {
    let sim = Sim::start(world(115)).await;
    let (_d, addr) = start(&config_for(&sim)).await;
    let nx = ask(addr, "nope.example.test.", RecordType::A).await;
    assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(
        nx.authorities.first().map(|r| r.record_type()),
        Some(RecordType::SOA)
    );
    let nodata = ask(addr, "www.example.test.", RecordType::MX).await;
    assert_eq!(nodata.metadata.response_code, ResponseCode::NoError);
    assert!(nodata.answers.is_empty());
    assert_eq!(
        nodata.authorities.first().map(|r| r.record_type()),
        Some(RecordType::SOA)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn hundred_concurrent_queries_are_all_answered() {
    let sim = Sim::start(world(116)).await;
    let (_d, addr) = start(&config_for(&sim)).await;
    let mut tasks = Vec::new();
    for i in 0..100 {
        tasks.push(tokio::spawn(async move {
            // Names that do not exist under a wildcard-free zone: each is a
            // distinct question needing its own upstream answer.
            let name = format!("n{i}.example.test.");
            exchange_udp(addr, &make_query(&name, RecordType::A, true), T).await
        }));
    }
    let mut answered = 0;
    for t in tasks {
        if let Ok(Some(m)) = t.await {
            assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "{m:?}");
            answered += 1;
        }
    }
    assert_eq!(answered, 100);
}

#[tokio::test(flavor = "multi_thread")]
async fn reply_echoes_id_rd_and_question_case() {
    let sim = Sim::start(world(117)).await;
    let (_d, addr) = start(&config_for(&sim)).await;
    let mut q = make_query("WwW.ExAmPlE.tEsT.", RecordType::A, true);
    q.metadata.recursion_desired = true;
    let m = exchange_udp(addr, &q, T).await.expect("reply");
    assert_eq!(m.metadata.id, q.metadata.id);
    assert!(m.metadata.recursion_desired);
    assert_eq!(m.queries[0].name().to_string(), "WwW.ExAmPlE.tEsT.");
    assert_eq!(addrs(&m), vec!["192.0.2.10"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn ds_is_asked_of_the_parent_zone() {
    let sim = Sim::start(world(118)).await;
    let (_d, addr) = start(&config_for(&sim)).await;
    let m = ask(addr, "sub.example.test.", RecordType::DS).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(m.answers.len(), 1);
    assert_eq!(u16::from(m.answers[0].record_type()), 43);
    assert!(
        sim.server("ns1.sub.example.test.")
            .queries()
            .iter()
            .all(|q| q.qtype != RecordType::DS),
        "the child is not asked for DS"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn dname_is_followed_with_a_synthesised_cname() {
    let sim = Sim::start(world(119)).await;
    let (_d, addr) = start(&config_for(&sim)).await;
    let m = ask(addr, "www.dn.example.test.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    let types: Vec<u16> = m
        .answers
        .iter()
        .map(|r| u16::from(r.record_type()))
        .collect();
    assert_eq!(types, vec![39, 5, 1], "DNAME, CNAME, A");
    assert_eq!(addrs(&m), vec!["192.0.2.80"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn glue_expiring_before_its_ns_set_is_fetched_again_from_the_parent() {
    let n = 120;
    let root = root_zone(n, &[("test", 2)]);
    // The delegation lives 300 s, its glue 1 s.
    let tld = format!(
        "$ORIGIN test.\n@ SOA ns1 h 1 3600 600 86400 300\n@ NS ns1\nns1 A 127.{n}.0.2\n\
         example 300 NS ns1.example\nns1.example 1 A 127.{n}.0.3\n"
    );
    let example = format!(
        "$ORIGIN example.test.\n@ SOA ns1 h 1 3600 600 86400 60\n@ NS ns1\nns1 1 A 127.{n}.0.3\n\
         www A 192.0.2.10\nmail A 192.0.2.25\n"
    );
    let sim = Sim::start(vec![
        ServerSpec::new("a.root-servers.test.", &format!("127.{n}.0.1"), &[&root]).root(),
        ServerSpec::new("ns1.test.", &format!("127.{n}.0.2"), &[&tld]),
        ServerSpec::new("ns1.example.test.", &format!("127.{n}.0.3"), &[&example]),
    ])
    .await;
    let (_d, addr) = start(&config_for(&sim)).await;
    assert_eq!(
        addrs(&ask(addr, "www.example.test.", RecordType::A).await),
        vec!["192.0.2.10"]
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let m = ask(addr, "mail.example.test.", RecordType::A).await;
    assert_eq!(addrs(&m), vec!["192.0.2.25"], "{m:?}");
}
