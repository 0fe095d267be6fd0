//! Local zones through the running daemon: regions by source address and
//! by ECS (with the scope echoed), weighted draws not frozen by the cache,
//! authoritative static data, and reload.

mod support;

use hickory_proto::op::{Edns, Message, ResponseCode};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
use hickory_proto::rr::{RData, RecordType};
use resolvd::config::Config;
use resolvd::daemon::Daemon;
use resolvd::metrics::Metrics;
use resolvd::resolve::Refuse;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use support::*;

const T: u64 = 3000;

const ZONE_FILE: &str = "$ORIGIN svc.test.
$TTL 60
@ SOA ns1 hostmaster 1 3600 600 86400 60
@ NS ns1
ns1 A 192.0.2.1
static A 192.0.2.5
*.wild A 192.0.2.9
";

fn config(dir: &std::path::Path, api_members: &str) -> Config {
    std::fs::write(dir.join("svc.test.zone"), ZONE_FILE).unwrap();
    let text = format!(
        r#"
[server]
listen = ["127.0.0.1:0"]
threads = 2
[control]
enabled = false
[geo.regions]
eu = ["127.0.1.0/24", "10.1.0.0/16"]
us = ["127.0.2.0/24", "10.2.0.0/16"]

[[zone]]
origin = "svc.test."
file = "svc.test.zone"
ttl = 30

[[zone.pool]]
name = "api"
type = "A"
members = [{api_members}]
fallback = "all"

[[zone.pool]]
name = "www"
type = "A"
members = [
  {{ value = "192.0.2.10", weight = 1 }},
  {{ value = "192.0.2.11", weight = 1 }},
]
"#
    );
    let path = dir.join("resolvd.toml");
    std::fs::write(&path, text).unwrap();
    Config::load(&path).unwrap_or_else(|e| panic!("{e:?}"))
}

const GEO: &str = r#"
  { value = "192.0.2.20", weight = 1, region = "eu" },
  { value = "198.51.100.20", weight = 1, region = "us" },
"#;

async fn daemon(cfg: &Config) -> (Daemon, SocketAddr) {
    let d = Daemon::start_with(cfg, Arc::new(Refuse), Arc::new(Metrics::default()))
        .await
        .unwrap();
    let a = d.local_addrs()[0];
    (d, a)
}

/// Asks for api.svc.test A from the source address `from`.
async fn api_from(addr: SocketAddr, from: &str) -> Message {
    query_udp_from(
        from.parse().unwrap(),
        addr,
        "api.svc.test.",
        RecordType::A,
        T,
    )
    .await
    .expect("reply")
}

fn first_a(m: &Message) -> String {
    match m.answers.first().map(|r| &r.data) {
        Some(RData::A(a)) => a.0.to_string(),
        other => panic!("no A record: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn region_is_chosen_by_source_address() {
    let dir = tempfile::tempdir().unwrap();
    let (_d, addr) = daemon(&config(dir.path(), GEO)).await;
    for _ in 0..10 {
        let eu = api_from(addr, "127.0.1.7").await;
        assert!(eu.metadata.authoritative);
        assert_eq!(first_a(&eu), "192.0.2.20");
        assert_eq!(eu.answers[0].ttl, 30);
        let us = api_from(addr, "127.0.2.7").await;
        assert_eq!(first_a(&us), "198.51.100.20");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn region_is_chosen_by_client_subnet_and_scope_is_echoed() {
    let dir = tempfile::tempdir().unwrap();
    let (_d, addr) = daemon(&config(dir.path(), GEO)).await;
    for (subnet, want) in [("10.2.3.0", "198.51.100.20"), ("10.1.9.0", "192.0.2.20")] {
        let mut q = make_query("api.svc.test.", RecordType::A, false);
        let mut e = Edns::new();
        e.set_max_payload(1232);
        e.options_mut().insert(EdnsOption::Subnet(ClientSubnet::new(
            subnet.parse::<IpAddr>().unwrap(),
            24,
            0,
        )));
        q.set_edns(e);
        // Sent from an eu source address: ECS must win.
        let m = exchange_udp_from("127.0.1.8".parse().unwrap(), addr, &q, T)
            .await
            .unwrap();
        assert_eq!(first_a(&m), want, "{subnet}");
        let ecs = m
            .edns
            .as_ref()
            .and_then(|e| e.option(EdnsCode::Subnet))
            .expect("ECS echoed");
        let EdnsOption::Subnet(ecs) = ecs else {
            panic!("{ecs:?}")
        };
        let bytes: Vec<u8> = ecs.try_into().unwrap();
        assert_eq!(bytes[2], 24, "source prefix echoed");
        assert_eq!(bytes[3], 16, "scope = the matched region prefix /16");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn fallback_serves_all_members_to_unmapped_clients() {
    let dir = tempfile::tempdir().unwrap();
    let (_d, addr) = daemon(&config(dir.path(), GEO)).await;
    let mut seen = BTreeMap::new();
    for _ in 0..200 {
        let m = api_from(addr, "127.0.3.1").await;
        *seen.entry(first_a(&m)).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 2, "both regions' members: {seen:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn weighted_answers_are_drawn_per_query_not_cached() {
    let dir = tempfile::tempdir().unwrap();
    let (_d, addr) = daemon(&config(dir.path(), GEO)).await;
    let mut seen = BTreeMap::new();
    for _ in 0..400 {
        let m = query_udp(addr, "www.svc.test.", RecordType::A, T)
            .await
            .unwrap();
        *seen.entry(first_a(&m)).or_insert(0u32) += 1;
    }
    // 1:1 weights over 400 draws: each side is 200 ± 4σ (σ = 10).
    for (ip, n) in &seen {
        assert!((160..=240).contains(n), "{ip}: {n} of 400");
    }
    assert_eq!(seen.len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn static_records_negative_answers_and_wildcards_are_authoritative() {
    let dir = tempfile::tempdir().unwrap();
    let (_d, addr) = daemon(&config(dir.path(), GEO)).await;
    let m = query_udp(addr, "static.svc.test.", RecordType::A, T)
        .await
        .unwrap();
    assert!(m.metadata.authoritative);
    assert_eq!(first_a(&m), "192.0.2.5");
    let nx = query_udp(addr, "nope.svc.test.", RecordType::A, T)
        .await
        .unwrap();
    assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(nx.authorities[0].record_type(), RecordType::SOA);
    let nodata = query_udp(addr, "static.svc.test.", RecordType::MX, T)
        .await
        .unwrap();
    assert_eq!(nodata.metadata.response_code, ResponseCode::NoError);
    assert!(nodata.answers.is_empty());
    assert_eq!(nodata.authorities[0].record_type(), RecordType::SOA);
    let w = query_udp(addr, "x.wild.svc.test.", RecordType::A, T)
        .await
        .unwrap();
    assert_eq!(first_a(&w), "192.0.2.9");
    assert_eq!(w.answers[0].name.to_string(), "x.wild.svc.test.");
}

#[tokio::test(flavor = "multi_thread")]
async fn reload_swaps_the_pool_and_a_bad_reload_keeps_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let (d, addr) = daemon(&config(dir.path(), GEO)).await;
    let before = api_from(addr, "127.0.1.7").await;
    assert_eq!(first_a(&before), "192.0.2.20");
    let new = config(
        dir.path(),
        r#"{ value = "192.0.2.44", weight = 1, region = "eu" }"#,
    );
    d.reload(&new).unwrap();
    let after = api_from(addr, "127.0.1.7").await;
    assert_eq!(first_a(&after), "192.0.2.44");
    let bad = config(
        dir.path(),
        r#"{ value = "192.0.2.45", weight = 1, region = "mars" }"#,
    );
    let err = d.reload(&bad).unwrap_err().to_string();
    assert!(err.contains("mars"), "{err}");
    let still = api_from(addr, "127.0.1.7").await;
    assert_eq!(first_a(&still), "192.0.2.44", "old config keeps serving");
}
