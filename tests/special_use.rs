//! Special-use names (RFC 6761, RFC 6303, RFC 7686, RFC 8375) are answered
//! by resolvd itself, without a single upstream query, unless excluded.
//! Uses 127.190.0.0/24 and 127.191.0.0/24.

mod support;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, RecordType};
use resolvd::config::Config;
use resolvd::zones::ZoneConfig;
use support::under_test::{config_for, root_zone, start};
use support::*;

/// root → test. → example.test., plus an arpa. tree that would answer
/// the private reverse names if they ever got there.
async fn world(n: u8) -> Sim {
    let root = root_zone(n, &[("test", 2), ("arpa", 4)]);
    let tld = format!(
        "$ORIGIN test.\n@ SOA ns1 h 1 3600 600 86400 300\n@ NS ns1\nns1 A 127.{n}.0.2\n\
         example NS ns1.example\nns1.example A 127.{n}.0.3\n"
    );
    let example = format!(
        "$ORIGIN example.test.\n@ SOA ns1 h 1 3600 600 86400 60\n@ NS ns1\nns1 A 127.{n}.0.3\n\
         www A 192.0.2.10\n"
    );
    let arpa = "$ORIGIN arpa.\n@ SOA ns1 h 1 3600 600 86400 60\n@ NS ns1\n\
         *.10.in-addr TXT \"leaked\"\n*.home TXT \"leaked\"\n";
    Sim::start(vec![
        ServerSpec::new("a.root-servers.test.", &format!("127.{n}.0.1"), &[&root]).root(),
        ServerSpec::new("ns1.test.", &format!("127.{n}.0.2"), &[&tld]),
        ServerSpec::new("ns1.example.test.", &format!("127.{n}.0.3"), &[&example]),
        ServerSpec::new("ns1.arpa.", &format!("127.{n}.0.4"), &[arpa]),
    ])
    .await
}

fn no_exclusions(sim: &Sim) -> Config {
    let mut cfg = config_for(sim);
    cfg.resolver.special_use_exclude.clear();
    cfg
}

fn data(m: &Message) -> Vec<String> {
    m.answers
        .iter()
        .map(|r| format!("{} {}", r.record_type(), r.data))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn special_use_names_are_answered_without_any_upstream_query() {
    let sim = world(190).await;
    let (_d, addr) = start(&no_exclusions(&sim)).await;
    let cases: &[(&str, RecordType, ResponseCode, &[&str])] = &[
        (
            "localhost.",
            RecordType::A,
            ResponseCode::NoError,
            &["A 127.0.0.1"],
        ),
        (
            "localhost.",
            RecordType::AAAA,
            ResponseCode::NoError,
            &["AAAA ::1"],
        ),
        (
            "db.localhost.",
            RecordType::A,
            ResponseCode::NoError,
            &["A 127.0.0.1"],
        ),
        (
            "1.0.0.127.in-addr.arpa.",
            RecordType::PTR,
            ResponseCode::NoError,
            &["PTR localhost."],
        ),
        (
            "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa.",
            RecordType::PTR,
            ResponseCode::NoError,
            &["PTR localhost."],
        ),
        ("foo.invalid.", RecordType::A, ResponseCode::NXDomain, &[]),
        (
            "www.example.test.",
            RecordType::A,
            ResponseCode::NXDomain,
            &[],
        ),
        (
            "duckduckgogg42xjoc72x3sjasowoarfbgcmvfimaftt6twagswzczad.onion.",
            RecordType::A,
            ResponseCode::NXDomain,
            &[],
        ),
        (
            "printer.home.arpa.",
            RecordType::A,
            ResponseCode::NXDomain,
            &[],
        ),
        (
            "1.2.168.192.in-addr.arpa.",
            RecordType::PTR,
            ResponseCode::NXDomain,
            &[],
        ),
        (
            "4.3.2.10.in-addr.arpa.",
            RecordType::PTR,
            ResponseCode::NXDomain,
            &[],
        ),
        (
            "9.0.20.172.in-addr.arpa.",
            RecordType::PTR,
            ResponseCode::NXDomain,
            &[],
        ),
        (
            "1.1.254.169.in-addr.arpa.",
            RecordType::PTR,
            ResponseCode::NXDomain,
            &[],
        ),
        (
            "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.",
            RecordType::PTR,
            ResponseCode::NXDomain,
            &[],
        ),
        (
            "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.e.f.ip6.arpa.",
            RecordType::PTR,
            ResponseCode::NXDomain,
            &[],
        ),
        (
            "1.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa.",
            RecordType::PTR,
            ResponseCode::NXDomain,
            &[],
        ),
    ];
    for (name, t, rcode, want) in cases {
        let m = ask(addr, name, *t).await;
        assert_eq!(m.metadata.response_code, *rcode, "{name} {t}: {m:?}");
        assert_eq!(data(&m), *want, "{name} {t}");
        if *rcode == ResponseCode::NXDomain {
            let soa = m.authorities.first().map(|r| r.record_type());
            assert_eq!(
                soa,
                Some(RecordType::SOA),
                "{name}: NXDOMAIN carries the SOA"
            );
        }
    }
    // The zone apex answers its SOA, as a served zone does.
    let m = ask(addr, "10.in-addr.arpa.", RecordType::SOA).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(m.answers.len(), 1);
    assert_eq!(sim.total_queries(), 0, "nothing went upstream");
    // A public reverse name still goes upstream.
    let m = ask(addr, "4.3.2.11.in-addr.arpa.", RecordType::PTR).await;
    assert_ne!(m.metadata.response_code, ResponseCode::Refused);
    assert!(sim.total_queries() > 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn special_use_exclude_sends_test_upstream() {
    let sim = world(191).await;
    // config_for excludes "test." because the simulated world lives there.
    let (_d, addr) = start(&config_for(&sim)).await;
    let m = ask(addr, "www.example.test.", RecordType::A).await;
    assert_eq!(data(&m), vec!["A 192.0.2.10"]);
    assert!(!sim.server("ns1.example.test.").queries().is_empty());
    // The other special names stay local.
    let before = sim.total_queries();
    let m = ask(addr, "4.3.2.10.in-addr.arpa.", RecordType::PTR).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(sim.total_queries(), before);
}

#[tokio::test(flavor = "multi_thread")]
async fn special_use_names_can_be_turned_off() {
    let sim = world(192).await;
    let mut cfg = config_for(&sim);
    cfg.resolver.special_use_names = false;
    let (_d, addr) = start(&cfg).await;
    let m = ask(addr, "x.4.3.2.10.in-addr.arpa.", RecordType::TXT).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{m:?}");
    match m.answers.first().map(|r| &r.data) {
        Some(RData::TXT(t)) => assert_eq!(t.to_string(), "leaked"),
        other => panic!("expected the upstream TXT, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn local_zone_with_a_special_origin_wins() {
    let sim = world(193).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("home.zone"),
        "printer 300 IN A 192.168.1.20\n",
    )
    .unwrap();
    let mut cfg = no_exclusions(&sim);
    cfg.base_dir = dir.path().to_path_buf();
    let zone: ZoneConfig =
        toml::from_str("origin = \"home.arpa.\"\nfile = \"home.zone\"\n").unwrap();
    cfg.zone = vec![zone];
    let (_d, addr) = start(&cfg).await;
    let m = ask(addr, "printer.home.arpa.", RecordType::A).await;
    assert_eq!(data(&m), vec!["A 192.168.1.20"]);
    // Other special names are still served.
    let m = ask(addr, "foo.invalid.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(sim.total_queries(), 0);
}

#[test]
fn special_use_exclude_must_name_a_special_zone() {
    let err =
        Config::parse("[resolver]\nspecial_use_exclude = [\"tset.\"]\n", "x.toml").unwrap_err();
    assert_eq!(
        err[0].to_string(),
        "x.toml:2: special_use_exclude: \"tset.\" is not a special-use zone nor above one"
    );
    assert!(Config::parse(
        "[resolver]\nspecial_use_exclude = [\"test.\", \"in-addr.arpa.\"]\n",
        "x.toml"
    )
    .is_ok());
}
