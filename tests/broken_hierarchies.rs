//! Resolution through badly kept delegations: the parent's and the child's
//! NS data disagreeing, glue cycles, servers lame for one type, answers of
//! the wrong type, NODATA without an SOA. Each test sets up the breakage in
//! the simulated hierarchy, asks resolvd, and checks the reply and what the
//! servers saw. Each test uses its own 127.N.0.0/24 block (170 ≤ N < 190).

mod support;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use std::time::{Duration, Instant};
use support::under_test::{config_for, root_zone, start};
use support::*;

fn asked(sim: &Sim, server: &str, name: &str, t: RecordType) -> usize {
    sim.server(server)
        .queries()
        .iter()
        .filter(|q| q.name.eq_ignore_ascii_case(name) && q.qtype == t)
        .count()
}

fn silent() -> Faults {
    Faults {
        silent: true,
        ..Default::default()
    }
}

/// root .1 → test. .2, whose delegation of example.test. is `parent_ns`
/// (text lines of the test. zone); `example` is the child zone's text,
/// served by every server in `example_servers` (name, host octet).
fn split_world(
    n: u8,
    parent_ns: &str,
    example: &str,
    example_servers: &[(&str, u8)],
) -> Vec<ServerSpec> {
    let root = root_zone(n, &[("test", 2)]);
    let tld = format!(
        "$ORIGIN test.\n$TTL 86400\n@ SOA ns1 hostmaster 1 3600 600 86400 300\n@ NS ns1\n\
         ns1 A 127.{n}.0.2\n{parent_ns}"
    );
    let mut specs = vec![
        ServerSpec::new("a.root-servers.test.", &format!("127.{n}.0.1"), &[&root]).root(),
        ServerSpec::new("ns1.test.", &format!("127.{n}.0.2"), &[&tld]),
    ];
    for (name, host) in example_servers {
        specs.push(ServerSpec::new(
            name,
            &format!("127.{n}.0.{host}"),
            &[example],
        ));
    }
    specs
}

#[tokio::test(flavor = "multi_thread")]
async fn parent_glue_works_when_the_childs_address_for_its_server_fails() {
    let n = 170;
    // The parent's glue says .3; the child says its ns1 is at .7, which
    // never answers (a renumbered server whose zone data was not updated).
    let parent = format!("example NS ns1.example\nns1.example A 127.{n}.0.3\n");
    let example = format!(
        "$ORIGIN example.test.\n$TTL 300\n@ SOA ns1 hostmaster 1 3600 600 86400 120\n\
         @ NS ns1\nns1 A 127.{n}.0.7\nwww A 192.0.2.10\nmail A 192.0.2.25\n"
    );
    let sim = Sim::start(split_world(
        n,
        &parent,
        &example,
        &[("glue.example.test.", 3), ("ns1.example.test.", 7)],
    ))
    .await;
    sim.server("127.170.0.7").set_faults(silent());
    let (_d, addr) = start(&config_for(&sim)).await;
    assert_eq!(
        addrs(&ask(addr, "www.example.test.", RecordType::A).await),
        vec!["192.0.2.10"]
    );
    // The child's own address for its server is learned (and answered: it
    // is the authoritative data)...
    let ns1 = ask(addr, "ns1.example.test.", RecordType::A).await;
    assert_eq!(addrs(&ns1), vec![format!("127.{n}.0.7")]);
    // ...and preferred; when it fails, the parent's glue still works.
    let m = ask(addr, "mail.example.test.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{m:?}");
    assert_eq!(addrs(&m), vec!["192.0.2.25"]);
    assert!(
        asked(&sim, "127.170.0.7", "mail.example.test.", RecordType::A) >= 1,
        "the child-side address is tried first"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn parent_side_ns_names_are_tried_when_every_child_side_server_fails() {
    let n = 171;
    // The parent lists ns1 and ns2; the child lists ns1 and ns3.
    let parent = format!(
        "example NS ns1.example\nexample NS ns2.example\n\
         ns1.example A 127.{n}.0.3\nns2.example A 127.{n}.0.6\n"
    );
    let example = format!(
        "$ORIGIN example.test.\n$TTL 300\n@ SOA ns1 hostmaster 1 3600 600 86400 120\n\
         @ NS ns1\n@ NS ns3\nns1 A 127.{n}.0.3\nns2 A 127.{n}.0.6\nns3 A 127.{n}.0.9\n\
         www A 192.0.2.10\nmail A 192.0.2.25\n"
    );
    let sim = Sim::start(split_world(
        n,
        &parent,
        &example,
        &[
            ("ns1.example.test.", 3),
            ("ns2.example.test.", 6),
            ("ns3.example.test.", 9),
        ],
    ))
    .await;
    let (_d, addr) = start(&config_for(&sim)).await;
    assert_eq!(
        addrs(&ask(addr, "www.example.test.", RecordType::A).await),
        vec!["192.0.2.10"]
    );
    // Learn the child's NS set and its addresses.
    let ns = ask(addr, "example.test.", RecordType::NS).await;
    assert_eq!(ns.answers.len(), 2, "{ns:?}");
    ask(addr, "ns3.example.test.", RecordType::A).await;
    // Every server the child names goes quiet; only the parent's ns2 is left.
    sim.server("ns1.example.test.").set_faults(silent());
    sim.server("ns3.example.test.").set_faults(silent());
    let m = ask(addr, "mail.example.test.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{m:?}");
    assert_eq!(addrs(&m), vec!["192.0.2.25"]);
    assert_eq!(
        asked(
            &sim,
            "ns2.example.test.",
            "mail.example.test.",
            RecordType::A
        ),
        1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn child_side_ns_names_are_used_when_the_parents_fail() {
    let n = 172;
    let parent = format!("example NS ns1.example\nns1.example A 127.{n}.0.3\n");
    let example = format!(
        "$ORIGIN example.test.\n$TTL 300\n@ SOA ns1 hostmaster 1 3600 600 86400 120\n\
         @ NS ns1\n@ NS ns2\nns1 A 127.{n}.0.3\nns2 A 127.{n}.0.6\n\
         www A 192.0.2.10\nmail A 192.0.2.25\n"
    );
    let sim = Sim::start(split_world(
        n,
        &parent,
        &example,
        &[("ns1.example.test.", 3), ("ns2.example.test.", 6)],
    ))
    .await;
    let (_d, addr) = start(&config_for(&sim)).await;
    ask(addr, "www.example.test.", RecordType::A).await;
    // The child's NS set names ns2, which the parent does not, and gives
    // its address.
    ask(addr, "example.test.", RecordType::NS).await;
    ask(addr, "ns2.example.test.", RecordType::A).await;
    sim.server("ns1.example.test.").set_faults(silent());
    let m = ask(addr, "mail.example.test.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{m:?}");
    assert_eq!(addrs(&m), vec!["192.0.2.25"]);
    assert_eq!(
        asked(
            &sim,
            "ns2.example.test.",
            "mail.example.test.",
            RecordType::A
        ),
        1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn parent_glue_is_used_when_the_childs_ns_names_cannot_be_resolved() {
    let n = 173;
    // The child names only ns.corp.other., whose zone's server is silent.
    let parent = format!("example NS ns1.example\nns1.example A 127.{n}.0.3\n");
    let example = "$ORIGIN example.test.\n$TTL 300\n@ SOA ns1 hostmaster 1 3600 600 86400 120\n\
         @ NS ns.corp.other.\nwww A 192.0.2.10\nmail A 192.0.2.25\n";
    let mut specs = split_world(n, &parent, example, &[("ns1.example.test.", 3)]);
    specs[0] = ServerSpec::new(
        "a.root-servers.test.",
        &format!("127.{n}.0.1"),
        &[&root_zone(n, &[("test", 2), ("other", 5)])],
    )
    .root();
    let other = format!(
        "$ORIGIN other.\n$TTL 86400\n@ SOA ns1 hostmaster 1 3600 600 86400 300\n@ NS ns1\n\
         ns1 A 127.{n}.0.5\ncorp NS ns1.corp\nns1.corp A 127.{n}.0.8\n"
    );
    specs.push(ServerSpec::new(
        "ns1.other.",
        &format!("127.{n}.0.5"),
        &[&other],
    ));
    specs.push(ServerSpec::new(
        "ns1.corp.other.",
        &format!("127.{n}.0.8"),
        &["$ORIGIN corp.other.\n@ SOA ns1 h 1 3600 600 86400 60\n@ NS ns1\n"],
    ));
    let sim = Sim::start(specs).await;
    sim.server("ns1.corp.other.").set_faults(silent());
    let (_d, addr) = start(&config_for(&sim)).await;
    ask(addr, "www.example.test.", RecordType::A).await;
    let ns = ask(addr, "example.test.", RecordType::NS).await;
    assert_eq!(ns.answers.len(), 1, "{ns:?}");
    let started = Instant::now();
    let m = ask(addr, "mail.example.test.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{m:?}");
    assert_eq!(addrs(&m), vec!["192.0.2.25"]);
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test(flavor = "multi_thread")]
async fn glue_cycle_is_broken_by_sibling_glue() {
    let n = 174;
    // a.test is served by ns.b.test, b.test by ns.a.test: each server's
    // name lies in the other zone. The parent's sibling glue breaks it.
    let root = root_zone(n, &[("test", 2)]);
    let tld = format!(
        "$ORIGIN test.\n$TTL 86400\n@ SOA ns1 hostmaster 1 3600 600 86400 300\n@ NS ns1\n\
         ns1 A 127.{n}.0.2\na NS ns.b.test.\nb NS ns.a.test.\n\
         ns.a.test. A 127.{n}.0.3\nns.b.test. A 127.{n}.0.4\n"
    );
    let a = format!(
        "$ORIGIN a.test.\n$TTL 300\n@ SOA ns.b.test. h 1 3600 600 86400 60\n\
         @ NS ns.b.test.\nns A 127.{n}.0.3\nwww A 192.0.2.1\n"
    );
    let b = format!(
        "$ORIGIN b.test.\n$TTL 300\n@ SOA ns.a.test. h 1 3600 600 86400 60\n\
         @ NS ns.a.test.\nns A 127.{n}.0.4\nwww A 192.0.2.2\n"
    );
    let sim = Sim::start(vec![
        ServerSpec::new("a.root-servers.test.", &format!("127.{n}.0.1"), &[&root]).root(),
        ServerSpec::new("ns1.test.", &format!("127.{n}.0.2"), &[&tld]),
        // ns.a.test (.3) serves b.test; ns.b.test (.4) serves a.test.
        ServerSpec::new("ns.a.test.", &format!("127.{n}.0.3"), &[&b]),
        ServerSpec::new("ns.b.test.", &format!("127.{n}.0.4"), &[&a]),
    ])
    .await;
    let (_d, addr) = start(&config_for(&sim)).await;
    let m = ask(addr, "www.a.test.", RecordType::A).await;
    assert_eq!(addrs(&m), vec!["192.0.2.1"], "{m:?}");
    let m = ask(addr, "www.b.test.", RecordType::A).await;
    assert_eq!(addrs(&m), vec!["192.0.2.2"], "{m:?}");
    // The child-side addresses, once learned, agree and keep working.
    ask(addr, "a.test.", RecordType::NS).await;
    ask(addr, "b.test.", RecordType::NS).await;
    let m = ask(addr, "ns.a.test.", RecordType::A).await;
    assert_eq!(addrs(&m), vec![format!("127.{n}.0.3")]);
    let m = ask(addr, "x.a.test.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "{m:?}");
}

/// root → test. → example.test. on ns1 (.3) and ns2 (.6).
fn two_server_world(n: u8) -> Vec<ServerSpec> {
    let parent = format!(
        "example NS ns1.example\nexample NS ns2.example\n\
         ns1.example A 127.{n}.0.3\nns2.example A 127.{n}.0.6\n"
    );
    let example = format!(
        "$ORIGIN example.test.\n$TTL 300\n@ SOA ns1 hostmaster 1 3600 600 86400 120\n\
         @ NS ns1\n@ NS ns2\nns1 A 127.{n}.0.3\nns2 A 127.{n}.0.6\n\
         www A 192.0.2.10\nwww AAAA 2001:db8::10\nmail A 192.0.2.25\nwww TXT \"real\"\n"
    );
    split_world(
        n,
        &parent,
        &example,
        &[("ns1.example.test.", 3), ("ns2.example.test.", 6)],
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn server_lame_for_one_type_is_skipped_and_all_lame_gives_servfail() {
    let sim = Sim::start(two_server_world(175)).await;
    let lame_aaaa = Faults {
        lame_types: vec![RecordType::AAAA],
        ..Default::default()
    };
    sim.server("ns1.example.test.")
        .set_faults(lame_aaaa.clone());
    let (_d, addr) = start(&config_for(&sim)).await;
    let m = ask(addr, "www.example.test.", RecordType::AAAA).await;
    assert_eq!(addrs(&m), vec!["2001:db8::10"], "{m:?}");
    // Both lame for AAAA: no NODATA made up from a lame reply.
    sim.server("ns2.example.test.").set_faults(lame_aaaa);
    let m = ask(addr, "mail.example.test.", RecordType::AAAA).await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail, "{m:?}");
    for s in ["ns1.example.test.", "ns2.example.test."] {
        assert!(
            asked(&sim, s, "mail.example.test.", RecordType::AAAA) >= 1,
            "{s} was tried"
        );
    }
    // The servers still answer other types.
    let m = ask(addr, "mail.example.test.", RecordType::A).await;
    assert_eq!(addrs(&m), vec!["192.0.2.25"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn answer_of_the_wrong_type_is_nodata_and_never_cached() {
    let sim = Sim::start(two_server_world(176)).await;
    let (_d, addr) = start(&config_for(&sim)).await;
    // Warm the delegation so the walk itself asks no TXT.
    ask(addr, "mail.example.test.", RecordType::A).await;
    let txt_for_aaaa = Faults {
        answer_as: Some((RecordType::AAAA, RecordType::TXT)),
        ..Default::default()
    };
    for s in ["ns1.example.test.", "ns2.example.test."] {
        sim.server(s).set_faults(txt_for_aaaa.clone());
    }
    let m = ask(addr, "www.example.test.", RecordType::AAAA).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{m:?}");
    assert!(m.answers.is_empty(), "stray records returned: {m:?}");
    // The stray TXT was not stored: asking for TXT goes upstream.
    sim.clear_queries();
    let m = ask(addr, "www.example.test.", RecordType::TXT).await;
    assert_eq!(m.answers.len(), 1);
    let txt_asked: usize = ["ns1.example.test.", "ns2.example.test."]
        .iter()
        .map(|s| asked(&sim, s, "www.example.test.", RecordType::TXT))
        .sum();
    assert_eq!(txt_asked, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn answer_of_the_wrong_type_from_a_non_authoritative_server_is_a_failure() {
    let sim = Sim::start(two_server_world(177)).await;
    let (_d, addr) = start(&config_for(&sim)).await;
    ask(addr, "mail.example.test.", RecordType::A).await;
    for s in ["ns1.example.test.", "ns2.example.test."] {
        sim.server(s).set_faults(Faults {
            answer_as: Some((RecordType::AAAA, RecordType::A)),
            clear_aa: true,
            ..Default::default()
        });
    }
    let m = ask(addr, "www.example.test.", RecordType::AAAA).await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail, "{m:?}");
    assert!(m.answers.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn nodata_without_soa_is_answered_and_cached_briefly() {
    let sim = Sim::start(two_server_world(178)).await;
    for s in ["ns1.example.test.", "ns2.example.test."] {
        sim.server(s).set_faults(Faults {
            strip_soa: true,
            ..Default::default()
        });
    }
    let mut cfg = config_for(&sim);
    cfg.cache.negative_ttl_without_soa = 1;
    let (_d, addr) = start(&cfg).await;
    let mx_asked = |sim: &Sim| -> usize {
        ["ns1.example.test.", "ns2.example.test."]
            .iter()
            .map(|s| asked(sim, s, "www.example.test.", RecordType::MX))
            .sum()
    };
    for _ in 0..5 {
        let m = ask(addr, "www.example.test.", RecordType::MX).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{m:?}");
        assert!(m.answers.is_empty() && m.authorities.is_empty());
    }
    assert_eq!(mx_asked(&sim), 1, "a burst reaches the server once");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let m = ask(addr, "www.example.test.", RecordType::MX).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(mx_asked(&sim), 2, "only briefly");
}
