//! Behaviour of `LocalZones` as the resolver sees it: configure from TOML,
//! ask, assert what the client would get.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{Name, RData, RecordType};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::Deserialize;
use tokio::net::TcpSocket;
use tokio::task::JoinHandle;

use super::*;

const ZONE_FILE: &str = r#"$ORIGIN svc.example.
@        IN SOA ns1.svc.example. admin.svc.example. ( 2024010101 7200 900
                   1209600 60 )
@        IN NS    ns1
ns1      IN A     192.0.2.53
www      IN A     192.0.2.80
www      IN AAAA  2001:db8::80
www      120 IN TXT "web"
alias    IN CNAME www
ext      IN CNAME target.example.net.
*        IN A     192.0.2.99
*.wild   IN A     192.0.2.98
a.b.deep IN TXT   "deep"
api      IN TXT   "api pool lives here"
"#;

#[derive(Deserialize)]
struct Top {
    #[serde(default)]
    geo: GeoConfig,
    #[serde(default)]
    zone: Vec<ZoneConfig>,
}

/// Builds from a TOML snippet; `files` are written to a temp dir used as base_dir.
fn build(toml_text: &str, files: &[(&str, &str)]) -> Result<LocalZones, Vec<ZonesError>> {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, body) in files {
        std::fs::write(dir.path().join(name), body).expect("write");
    }
    let top: Top = toml::from_str(toml_text).expect("test TOML must deserialise");
    LocalZones::from_config(&top.zone, &top.geo, dir.path())
}

fn ok(toml_text: &str, files: &[(&str, &str)]) -> LocalZones {
    match build(toml_text, files) {
        Ok(z) => z,
        Err(errors) => panic!(
            "unexpected errors: {:#?}",
            errors.iter().map(ToString::to_string).collect::<Vec<_>>()
        ),
    }
}

/// The messages of a config that must fail.
fn errors(toml_text: &str, files: &[(&str, &str)]) -> Vec<String> {
    match build(toml_text, files) {
        Ok(_) => panic!("config unexpectedly accepted"),
        Err(errors) => errors.iter().map(ToString::to_string).collect(),
    }
}

fn assert_error(messages: &[String], needles: &[&str]) {
    assert!(
        messages
            .iter()
            .any(|m| needles.iter().all(|n| m.contains(n))),
        "no error containing {needles:?} in {messages:#?}"
    );
}

fn from(addr: &str) -> ClientInfo {
    ClientInfo {
        addr: addr.parse().expect("ip"),
        ecs: None,
    }
}

fn with_ecs(addr: &str, subnet: &str, source_prefix: u8) -> ClientInfo {
    ClientInfo {
        addr: addr.parse().expect("ip"),
        ecs: Some(ClientSubnet {
            addr: subnet.parse().expect("ip"),
            source_prefix,
        }),
    }
}

fn name(s: &str) -> Name {
    Name::from_str(s).expect("name")
}

fn ask(z: &LocalZones, qname: &str, qtype: RecordType, client: &ClientInfo) -> ZoneAnswer {
    z.lookup(&name(qname), qtype, client)
        .expect("name is in a local zone")
}

/// The rdata of the answer section as text, e.g. "192.0.2.80".
fn data(a: &ZoneAnswer) -> Vec<String> {
    a.answer.iter().map(|r| r.data.to_string()).collect()
}

fn is_negative_with_soa(a: &ZoneAnswer, rcode: ResponseCode) -> bool {
    a.rcode == rcode
        && a.answer.is_empty()
        && a.authority.len() == 1
        && a.authority
            .iter()
            .all(|r| r.record_type() == RecordType::SOA)
}

fn set_up(z: &LocalZones, value: &str, up: bool) {
    for zone in &z.zones {
        for pool in &zone.pools {
            for m in pool.members.iter().filter(|m| m.label == value) {
                m.health.up.store(up, Ordering::Relaxed);
            }
        }
    }
}

const STATIC: &str = r#"
[[zone]]
origin = "svc.example."
file = "svc.zone"
ttl = 30

[[zone.pool]]
name = "api"
type = "A"
members = [{ value = "192.0.2.10", weight = 1 }]
"#;

fn static_zone() -> LocalZones {
    ok(STATIC, &[("svc.zone", ZONE_FILE)])
}

// ---------------------------------------------------------------- static data

#[test]
fn static_records_from_the_zone_file_are_answered() {
    let z = static_zone();
    let a = ask(&z, "www.svc.example.", RecordType::A, &from("192.0.2.1"));
    assert_eq!(a.rcode, ResponseCode::NoError);
    assert_eq!(data(&a), vec!["192.0.2.80"]);
    assert_eq!(a.answer[0].ttl, 30, "records without TTL get the zone ttl");
    let txt = ask(&z, "WWW.Svc.Example.", RecordType::TXT, &from("192.0.2.1"));
    assert_eq!(txt.answer.len(), 1, "names match case-insensitively");
    assert_eq!(txt.answer[0].ttl, 120, "an explicit TTL is kept");
    // RFC 2308 §4: the zone's `ttl` acts as `$TTL`, so a record without
    // a TTL takes it, not the TTL of the record before (RFC 1035 §5.1
    // applies only when there is no `$TTL`).
    let alias = ask(
        &z,
        "alias.svc.example.",
        RecordType::CNAME,
        &from("192.0.2.1"),
    );
    assert_eq!(alias.answer[0].ttl, 30);
    let aaaa = ask(&z, "www.svc.example.", RecordType::AAAA, &from("192.0.2.1"));
    assert_eq!(data(&aaaa), vec!["2001:db8::80"]);
}

#[test]
fn names_outside_every_zone_are_left_to_the_resolver() {
    let z = static_zone();
    let c = from("192.0.2.1");
    assert!(z.lookup(&name("example."), RecordType::A, &c).is_none());
    assert!(z
        .lookup(&name("xsvc.example."), RecordType::A, &c)
        .is_none());
    assert!(z
        .lookup(&name("www.example.org."), RecordType::A, &c)
        .is_none());
    assert!(!z.is_empty());
    assert!(ok("", &[]).is_empty());
}

#[test]
fn missing_name_is_nxdomain_with_soa_in_authority() {
    let z = ok(
        "[[zone]]\norigin = \"svc.example.\"\nfile = \"svc.zone\"\n",
        &[(
            "svc.zone",
            "$ORIGIN svc.example.\n@ SOA ns1 admin 1 2 3 4 60\nwww A 192.0.2.1\n",
        )],
    );
    let a = ask(&z, "nope.svc.example.", RecordType::A, &from("192.0.2.1"));
    assert!(is_negative_with_soa(&a, ResponseCode::NXDomain), "{a:?}");
    assert_eq!(a.authority[0].ttl, 60, "negative TTL = SOA MINIMUM");
}

#[test]
fn missing_type_at_existing_name_is_nodata_with_soa() {
    let z = static_zone();
    let a = ask(&z, "ns1.svc.example.", RecordType::MX, &from("192.0.2.1"));
    assert!(is_negative_with_soa(&a, ResponseCode::NoError), "{a:?}");
    assert_eq!(a.authority[0].ttl, 60, "negative TTL = SOA MINIMUM");
}

#[test]
fn empty_non_terminal_is_nodata_not_wildcard() {
    let z = static_zone();
    for ent in ["b.deep.svc.example.", "deep.svc.example."] {
        let a = ask(&z, ent, RecordType::A, &from("192.0.2.1"));
        assert!(
            is_negative_with_soa(&a, ResponseCode::NoError),
            "{ent}: {a:?}"
        );
    }
}

#[test]
fn wildcard_synthesises_for_missing_names_with_the_query_name_as_owner() {
    let z = static_zone();
    let a = ask(
        &z,
        "Anything.svc.example.",
        RecordType::A,
        &from("192.0.2.1"),
    );
    assert_eq!(data(&a), vec!["192.0.2.99"]);
    assert_eq!(a.answer[0].name, name("Anything.svc.example."));
    // Deeper names match the wildcard at their closest encloser (RFC 4592).
    let deep = ask(
        &z,
        "x.y.wild.svc.example.",
        RecordType::A,
        &from("192.0.2.1"),
    );
    assert_eq!(data(&deep), vec!["192.0.2.98"]);
    // The wildcard node has no TXT: NODATA, not NXDOMAIN.
    let nodata = ask(
        &z,
        "other.svc.example.",
        RecordType::TXT,
        &from("192.0.2.1"),
    );
    assert!(
        is_negative_with_soa(&nodata, ResponseCode::NoError),
        "{nodata:?}"
    );
}

#[test]
fn wildcard_does_not_apply_to_names_that_exist() {
    let z = static_zone();
    // ns1 exists (A only): AAAA is NODATA, not the wildcard's data.
    let a = ask(&z, "ns1.svc.example.", RecordType::A, &from("192.0.2.1"));
    assert_eq!(data(&a), vec!["192.0.2.53"]);
    // Below an empty non-terminal: closest encloser is deep., which has no `*`.
    let below = ask(
        &z,
        "zz.deep.svc.example.",
        RecordType::A,
        &from("192.0.2.1"),
    );
    assert!(
        is_negative_with_soa(&below, ResponseCode::NXDomain),
        "{below:?}"
    );
}

#[test]
fn cname_is_chased_inside_the_zone_and_left_alone_outside() {
    let z = static_zone();
    let a = ask(&z, "alias.svc.example.", RecordType::A, &from("192.0.2.1"));
    assert_eq!(data(&a), vec!["www.svc.example.", "192.0.2.80"]);
    let c = ask(
        &z,
        "alias.svc.example.",
        RecordType::CNAME,
        &from("192.0.2.1"),
    );
    assert_eq!(data(&c), vec!["www.svc.example."]);
    let ext = ask(&z, "ext.svc.example.", RecordType::A, &from("192.0.2.1"));
    assert_eq!(data(&ext), vec!["target.example.net."]);
    assert_eq!(ext.rcode, ResponseCode::NoError);
}

#[test]
fn soa_and_ns_are_synthesised_when_the_file_has_none() {
    let z = ok("[[zone]]\norigin = \"empty.test\"\nttl = 45\n", &[]);
    let soa = ask(&z, "empty.test.", RecordType::SOA, &from("192.0.2.1"));
    assert_eq!(
        data(&soa),
        vec!["ns.empty.test. hostmaster.empty.test. 1 3600 600 86400 45"]
    );
    assert_eq!(soa.answer[0].ttl, 45);
    let ns = ask(&z, "empty.test.", RecordType::NS, &from("192.0.2.1"));
    assert_eq!(data(&ns), vec!["ns.empty.test."]);
    let nx = ask(&z, "www.empty.test.", RecordType::A, &from("192.0.2.1"));
    assert!(is_negative_with_soa(&nx, ResponseCode::NXDomain));
}

#[test]
fn pool_name_exists_and_shares_it_with_static_records_of_other_types() {
    let z = static_zone();
    let a = ask(&z, "api.svc.example.", RecordType::A, &from("192.0.2.1"));
    assert_eq!(data(&a), vec!["192.0.2.10"]);
    assert_eq!(a.answer[0].ttl, 30, "pool answers carry the zone ttl");
    let txt = ask(&z, "api.svc.example.", RecordType::TXT, &from("192.0.2.1"));
    assert_eq!(txt.answer.len(), 1);
    let aaaa = ask(&z, "api.svc.example.", RecordType::AAAA, &from("192.0.2.1"));
    assert!(
        is_negative_with_soa(&aaaa, ResponseCode::NoError),
        "A pool, AAAA query: NODATA"
    );
    let any = ask(&z, "api.svc.example.", RecordType::ANY, &from("192.0.2.1"));
    let types: BTreeSet<RecordType> = any.answer.iter().map(|r| r.record_type()).collect();
    assert_eq!(types, BTreeSet::from([RecordType::A, RecordType::TXT]));
    assert_eq!(a.ecs_scope, None);
}

#[test]
fn cname_pool_answers_every_query_type_and_chases_in_zone() {
    let z = ok(
        r#"
        [[zone]]
        origin = "svc.example."
        file = "svc.zone"
        [[zone.pool]]
        name = "cdn"
        type = "CNAME"
        members = [{ value = "www", weight = 1 }]
        [[zone.pool]]
        name = "out.svc.example."
        type = "cname"
        members = [{ value = "edge.example.net.", weight = 1 }]
        "#,
        &[("svc.zone", ZONE_FILE)],
    );
    let a = ask(&z, "cdn.svc.example.", RecordType::AAAA, &from("192.0.2.1"));
    assert_eq!(data(&a), vec!["www.svc.example.", "2001:db8::80"]);
    let mx = ask(&z, "out.svc.example.", RecordType::MX, &from("192.0.2.1"));
    assert_eq!(data(&mx), vec!["edge.example.net."]);
}

#[test]
fn wildcard_pool_answers_with_the_query_name() {
    let z = ok(
        r#"
        [[zone]]
        origin = "w.test."
        [[zone.pool]]
        name = "*"
        type = "A"
        members = [{ value = "192.0.2.7", weight = 1 }]
        "#,
        &[],
    );
    let a = ask(&z, "foo.w.test.", RecordType::A, &from("192.0.2.1"));
    assert_eq!(data(&a), vec!["192.0.2.7"]);
    assert_eq!(a.answer[0].name, name("foo.w.test."));
}

// ---------------------------------------------------------------- weights

fn weighted(weights: &[u32], answers: usize) -> LocalZones {
    let members: Vec<String> = weights
        .iter()
        .enumerate()
        .map(|(i, w)| format!("{{ value = \"192.0.2.{}\", weight = {w} }}", i + 1))
        .collect();
    ok(
        &format!(
            "[[zone]]\norigin = \"w.test.\"\n[[zone.pool]]\nname = \"www\"\ntype = \"A\"\nanswers = {answers}\nmembers = [{}]\n",
            members.join(", ")
        ),
        &[],
    )
}

/// Counts per member value over `n` lookups with a seeded RNG.
fn tally(z: &LocalZones, client: &ClientInfo, n: usize, seed: u64) -> HashMap<String, u64> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut counts = HashMap::new();
    for _ in 0..n {
        let a = z
            .lookup_with_rng(&name("www.w.test."), RecordType::A, client, &mut rng)
            .expect("in zone");
        for v in data(&a) {
            *counts.entry(v).or_insert(0) += 1;
        }
    }
    counts
}

fn chi_square(counts: &HashMap<String, u64>, expected_weights: &[(&str, f64)]) -> f64 {
    let n: u64 = counts.values().sum();
    let wsum: f64 = expected_weights.iter().map(|(_, w)| w).sum();
    expected_weights
        .iter()
        .map(|(v, w)| {
            let e = n as f64 * w / wsum;
            let o = *counts.get(*v).unwrap_or(&0) as f64;
            (o - e).powi(2) / e
        })
        .sum()
}

#[test]
fn weights_70_30_give_shares_within_chi_square_p001() {
    let z = weighted(&[70, 30], 1);
    let counts = tally(&z, &from("192.0.2.200"), 10_000, 42);
    let stat = chi_square(&counts, &[("192.0.2.1", 70.0), ("192.0.2.2", 30.0)]);
    assert!(
        stat < 10.83,
        "chi2 = {stat:.2} (df=1, p=0.001 critical 10.83), counts {counts:?}"
    );
}

#[test]
fn weights_1_1_2_give_shares_within_chi_square_p001() {
    let z = weighted(&[1, 1, 2], 1);
    let counts = tally(&z, &from("192.0.2.200"), 10_000, 4242);
    let stat = chi_square(
        &counts,
        &[("192.0.2.1", 1.0), ("192.0.2.2", 1.0), ("192.0.2.3", 2.0)],
    );
    assert!(
        stat < 13.82,
        "chi2 = {stat:.2} (df=2, p=0.001 critical 13.82), counts {counts:?}"
    );
}

#[test]
fn each_lookup_draws_afresh() {
    let z = weighted(&[1, 1], 1);
    let seen: BTreeSet<Vec<String>> = (0..200)
        .map(|_| data(&ask(&z, "www.w.test.", RecordType::A, &from("192.0.2.200"))))
        .collect();
    assert_eq!(seen.len(), 2);
}

#[test]
fn answers_2_returns_two_distinct_members() {
    let z = weighted(&[5, 1, 1], 2);
    for _ in 0..500 {
        let got = data(&ask(&z, "www.w.test.", RecordType::A, &from("192.0.2.200")));
        assert_eq!(got.len(), 2);
        assert_ne!(got[0], got[1]);
    }
}

#[test]
fn weight_0_standby_is_used_only_when_positive_members_are_down() {
    let z = weighted(&[3, 1, 0], 1);
    let c = from("192.0.2.200");
    let standby = "192.0.2.3";
    assert!((0..1000)
        .all(|_| !data(&ask(&z, "www.w.test.", RecordType::A, &c)).contains(&standby.to_string())));
    set_up(&z, "192.0.2.1", false);
    assert!((0..200).all(|_| data(&ask(&z, "www.w.test.", RecordType::A, &c)) == vec!["192.0.2.2"]));
    set_up(&z, "192.0.2.2", false);
    assert!((0..50).all(|_| data(&ask(&z, "www.w.test.", RecordType::A, &c)) == vec![standby]));
    set_up(&z, "192.0.2.1", true);
    assert!((0..50).all(|_| data(&ask(&z, "www.w.test.", RecordType::A, &c)) == vec!["192.0.2.1"]));
}

#[test]
fn all_members_down_fails_open_instead_of_servfail() {
    let z = weighted(&[1, 0], 1);
    set_up(&z, "192.0.2.1", false);
    set_up(&z, "192.0.2.2", false);
    let a = ask(&z, "www.w.test.", RecordType::A, &from("192.0.2.200"));
    assert_eq!(a.rcode, ResponseCode::NoError);
    assert_eq!(
        data(&a),
        vec!["192.0.2.1"],
        "positive member preferred, as if all were healthy"
    );
}

#[test]
fn all_weights_zero_is_allowed_and_uniform() {
    let z = weighted(&[0, 0], 1);
    let counts = tally(&z, &from("192.0.2.200"), 10_000, 8);
    assert!(
        chi_square(&counts, &[("192.0.2.1", 1.0), ("192.0.2.2", 1.0)]) < 10.83,
        "{counts:?}"
    );
}

// ---------------------------------------------------------------- geo

const GEO: &str = r#"
[geo.regions]
eu = ["10.1.0.0/16", "2001:db8:1::/48"]
us = ["10.2.0.0/16"]
lab = ["10.0.0.0/16"]

[[zone]]
origin = "svc.example."

[[zone.pool]]
name = "api"
type = "A"
members = [
  { value = "192.0.2.10", weight = 70, region = "eu" },
  { value = "192.0.2.11", weight = 30, region = "eu" },
  { value = "198.51.100.7", weight = 100, region = "us" },
]

[[zone.pool]]
name = "named"
type = "A"
fallback = "us"
members = [
  { value = "192.0.2.10", weight = 1, region = "eu" },
  { value = "198.51.100.7", weight = 1, region = "us" },
  { value = "203.0.113.1", weight = 1, region = "lab" },
]

[[zone.pool]]
name = "global"
type = "A"
members = [
  { value = "192.0.2.10", weight = 1, region = "eu" },
  { value = "203.0.113.9", weight = 1 },
]
"#;

fn values_seen(z: &LocalZones, qname: &str, client: &ClientInfo, n: usize) -> BTreeSet<String> {
    (0..n)
        .flat_map(|_| data(&ask(z, qname, RecordType::A, client)))
        .collect()
}

fn set(values: &[&str]) -> BTreeSet<String> {
    values.iter().map(ToString::to_string).collect()
}

#[test]
fn region_is_picked_by_source_address_without_ecs() {
    let z = ok(GEO, &[]);
    assert_eq!(
        values_seen(&z, "api.svc.example.", &from("10.1.2.3"), 300),
        set(&["192.0.2.10", "192.0.2.11"])
    );
    assert_eq!(
        values_seen(&z, "api.svc.example.", &from("10.2.9.9"), 50),
        set(&["198.51.100.7"])
    );
    assert_eq!(
        values_seen(&z, "api.svc.example.", &from("2001:db8:1::1"), 300),
        set(&["192.0.2.10", "192.0.2.11"])
    );
    let a = ask(&z, "api.svc.example.", RecordType::A, &from("10.2.9.9"));
    assert_eq!(a.ecs_scope, None, "no ECS, no scope");
}

#[test]
fn region_is_picked_by_ecs_address_with_the_matched_prefix_as_scope() {
    let z = ok(GEO, &[]);
    // The packet comes from eu, the ECS says us: ECS wins.
    let c = with_ecs("10.1.0.1", "10.2.0.0", 24);
    assert_eq!(
        values_seen(&z, "api.svc.example.", &c, 50),
        set(&["198.51.100.7"])
    );
    assert_eq!(
        ask(&z, "api.svc.example.", RecordType::A, &c).ecs_scope,
        Some(16)
    );
    // No region matched: scope is the source prefix.
    let none = with_ecs("10.1.0.1", "192.0.2.0", 24);
    assert_eq!(
        ask(&z, "api.svc.example.", RecordType::A, &none).ecs_scope,
        Some(24)
    );
    // Matched prefix longer than the source prefix: capped at the source prefix.
    let short = with_ecs("10.1.0.1", "10.0.0.0", 8);
    let a = ask(&z, "named.svc.example.", RecordType::A, &short);
    assert_eq!(data(&a), vec!["203.0.113.1"]);
    assert_eq!(a.ecs_scope, Some(8));
    // Static data does not depend on the client.
    let s = ask(&z, "svc.example.", RecordType::SOA, &c);
    assert_eq!(s.ecs_scope, None);
}

#[test]
fn unmatched_client_falls_back_to_all_members() {
    let z = ok(GEO, &[]);
    assert_eq!(
        values_seen(&z, "api.svc.example.", &from("192.0.2.200"), 500),
        set(&["192.0.2.10", "192.0.2.11", "198.51.100.7"])
    );
}

#[test]
fn fallback_all_when_the_clients_region_members_are_all_down() {
    let z = ok(GEO, &[]);
    set_up(&z, "192.0.2.10", false);
    set_up(&z, "192.0.2.11", false);
    assert_eq!(
        values_seen(&z, "api.svc.example.", &from("10.1.2.3"), 50),
        set(&["198.51.100.7"])
    );
}

#[test]
fn fallback_to_a_named_region_when_the_clients_region_members_are_all_down() {
    let z = ok(GEO, &[]);
    set_up(&z, "203.0.113.1", false);
    // lab client: lab is down, fallback "us" (not eu, not "all").
    assert_eq!(
        values_seen(&z, "named.svc.example.", &from("10.0.0.5"), 100),
        set(&["198.51.100.7"])
    );
    // Unmatched client: the named fallback too.
    assert_eq!(
        values_seen(&z, "named.svc.example.", &from("192.0.2.1"), 100),
        set(&["198.51.100.7"])
    );
}

#[test]
fn global_members_serve_regions_without_members_of_their_own() {
    let z = ok(GEO, &[]);
    assert_eq!(
        values_seen(&z, "global.svc.example.", &from("10.1.0.1"), 50),
        set(&["192.0.2.10"])
    );
    assert_eq!(
        values_seen(&z, "global.svc.example.", &from("10.2.0.1"), 50),
        set(&["203.0.113.9"])
    );
    assert_eq!(
        values_seen(&z, "global.svc.example.", &from("192.0.2.1"), 50),
        set(&["203.0.113.9"])
    );
    set_up(&z, "192.0.2.10", false);
    assert_eq!(
        values_seen(&z, "global.svc.example.", &from("10.1.0.1"), 50),
        set(&["203.0.113.9"])
    );
}

// ---------------------------------------------------------------- health

/// A listener on `ip:port` that accepts and drops connections until aborted.
async fn listen(ip: &str, port: u16) -> JoinHandle<()> {
    let addr = SocketAddr::new(ip.parse().expect("ip"), port);
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_reuseaddr(true).expect("reuseaddr");
    socket.bind(addr).expect("bind");
    let listener = socket.listen(64).expect("listen");
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            drop(conn);
        }
    })
}

async fn close(listener: JoinHandle<()>) {
    listener.abort();
    let _ = listener.await; // the listener is dropped once the task has ended
}

/// Waits (bounded) until `pred` holds on the set of values served in 40 lookups.
async fn eventually(z: &LocalZones, what: &str, pred: impl Fn(&BTreeSet<String>) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let seen = values_seen(z, "www.h.test.", &from("192.0.2.200"), 40);
        if pred(&seen) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what} (last seen {seen:?})"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn health_checks_take_a_member_out_when_its_port_closes_and_back_when_it_opens() {
    // Reserve an ephemeral port on 127.0.0.1; 127.0.0.2 shares the port number.
    let first = listen("127.0.0.1", 0).await;
    close(first).await;
    let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = probe.local_addr().expect("addr").port();
    drop(probe);
    let one = listen("127.0.0.1", port).await;

    let z = Arc::new(ok(
        &format!(
            r#"
            [[zone]]
            origin = "h.test."
            [[zone.pool]]
            name = "www"
            type = "A"
            members = [{{ value = "127.0.0.1", weight = 1 }}, {{ value = "127.0.0.2", weight = 1 }}]
            health = {{ tcp_port = {port}, interval = "50ms", timeout = "200ms", fails = 2 }}
            "#
        ),
        &[],
    ));
    let guard = z.start_health_checks();
    assert_eq!(guard.probes(), 2);

    eventually(&z, "127.0.0.2 (nothing listening) marked down", |s| {
        *s == set(&["127.0.0.1"])
    })
    .await;
    let two = listen("127.0.0.2", port).await;
    eventually(&z, "127.0.0.2 back after one success", |s| {
        s.contains("127.0.0.2")
    })
    .await;
    close(one).await;
    eventually(&z, "127.0.0.1 down after its port closed", |s| {
        *s == set(&["127.0.0.2"])
    })
    .await;
    let one = listen("127.0.0.1", port).await;
    eventually(&z, "127.0.0.1 back", |s| s.contains("127.0.0.1")).await;

    // Dropping the guard stops the probes: closing a port no longer matters.
    drop(guard);
    close(two).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(values_seen(&z, "www.h.test.", &from("192.0.2.200"), 40).contains("127.0.0.2"));
    close(one).await;
}

#[tokio::test]
async fn health_probes_end_when_the_zones_are_dropped() {
    let z = Arc::new(ok(
        r#"
        [[zone]]
        origin = "h.test."
        [[zone.pool]]
        name = "www"
        type = "A"
        members = [{ value = "127.0.0.1", weight = 1 }]
        health = { tcp_port = 9, interval = "20ms", timeout = "50ms" }
        "#,
        &[],
    ));
    let guard = z.start_health_checks();
    drop(z);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        guard.tasks_finished(),
        "probe tasks should exit once the zones are gone"
    );
}

// ---------------------------------------------------------------- validation

fn pool_toml(rtype: &str, members: &str, extra: &str) -> String {
    format!(
        "[geo.regions]\neu = [\"10.1.0.0/16\"]\n[[zone]]\norigin = \"svc.example.\"\n[[zone.pool]]\nname = \"api\"\ntype = \"{rtype}\"\nmembers = [{members}]\n{extra}\n"
    )
}

#[test]
fn unknown_region_in_a_member_is_rejected() {
    let e = errors(
        &pool_toml(
            "A",
            "{ value = \"192.0.2.1\", weight = 1, region = \"mars\" }",
            "",
        ),
        &[],
    );
    assert_error(
        &e,
        &[
            "zone \"svc.example.\" pool \"api\"",
            "member \"192.0.2.1\"",
            "unknown region \"mars\"",
            "(key: members.region)",
        ],
    );
}

#[test]
fn unknown_region_in_fallback_is_rejected() {
    let e = errors(
        &pool_toml(
            "A",
            "{ value = \"192.0.2.1\", weight = 1 }",
            "fallback = \"asia\"",
        ),
        &[],
    );
    assert_error(
        &e,
        &["pool \"api\"", "unknown region \"asia\"", "(key: fallback)"],
    );
}

#[test]
fn address_not_matching_the_pool_type_is_rejected() {
    let e = errors(
        &pool_toml(
            "A",
            "{ value = \"2001:db8::1\", weight = 1 }, { value = \"192.0.2.x\", weight = 1 }",
            "",
        ),
        &[],
    );
    assert_error(&e, &["zone \"svc.example.\" pool \"api\": member \"192.0.2.x\": not an IPv4 address (key: members.value)"]);
    assert_error(&e, &["member \"2001:db8::1\"", "not an IPv4 address"]);
    let e = errors(
        &pool_toml("AAAA", "{ value = \"192.0.2.1\", weight = 1 }", ""),
        &[],
    );
    assert_error(
        &e,
        &[
            "member \"192.0.2.1\"",
            "not an IPv6 address",
            "(key: members.value)",
        ],
    );
    let e = errors(
        &pool_toml("CNAME", "{ value = \"bad..name\", weight = 1 }", ""),
        &[],
    );
    assert_error(
        &e,
        &[
            "member \"bad..name\"",
            "not a valid domain name",
            "(key: members.value)",
        ],
    );
    let e = errors(
        &pool_toml("MX", "{ value = \"192.0.2.1\", weight = 1 }", ""),
        &[],
    );
    assert_error(&e, &["pool \"api\"", "(key: type)"]);
}

#[test]
fn duplicate_pool_name_in_a_zone_is_rejected() {
    let mut t = pool_toml("A", "{ value = \"192.0.2.1\", weight = 1 }", "");
    t.push_str("[[zone.pool]]\nname = \"api.svc.example.\"\ntype = \"A\"\nmembers = [{ value = \"192.0.2.2\", weight = 1 }]\n");
    let e = errors(&t, &[]);
    assert_error(
        &e,
        &["pool \"api.svc.example.\"", "duplicate pool", "(key: name)"],
    );
}

#[test]
fn a_and_aaaa_pools_may_share_a_name() {
    let mut t = pool_toml("A", "{ value = \"192.0.2.1\", weight = 1 }", "");
    t.push_str("[[zone.pool]]\nname = \"api\"\ntype = \"AAAA\"\nmembers = [{ value = \"2001:db8::1\", weight = 1 }]\n");
    let z = ok(&t, &[]);
    let a = ask(&z, "api.svc.example.", RecordType::AAAA, &from("192.0.2.1"));
    assert_eq!(data(&a), vec!["2001:db8::1"]);
}

#[test]
fn pool_colliding_with_static_records_of_the_same_type_is_rejected() {
    let file = "$ORIGIN svc.example.\napi A 192.0.2.50\n";
    let mut t = pool_toml("A", "{ value = \"192.0.2.1\", weight = 1 }", "");
    t = t.replace(
        "origin = \"svc.example.\"",
        "origin = \"svc.example.\"\nfile = \"z\"",
    );
    let e = errors(&t, &[("z", file)]);
    assert_error(
        &e,
        &["pool \"api\"", "already has A records", "(key: name)"],
    );
}

#[test]
fn negative_weight_is_rejected_by_our_validation() {
    let e = errors(
        &pool_toml("A", "{ value = \"192.0.2.1\", weight = -5 }", ""),
        &[],
    );
    assert_error(
        &e,
        &[
            "member \"192.0.2.1\"",
            "-5 is negative",
            "(key: members.weight)",
        ],
    );
}

#[test]
fn zero_answers_is_rejected() {
    let e = errors(
        &pool_toml("A", "{ value = \"192.0.2.1\", weight = 1 }", "answers = 0"),
        &[],
    );
    assert_error(&e, &["pool \"api\"", "(key: answers)"]);
}

#[test]
fn cname_pool_with_health_or_several_answers_is_rejected() {
    let e = errors(
        &pool_toml(
            "CNAME",
            "{ value = \"a.example.\", weight = 1 }",
            "answers = 2\nhealth = { tcp_port = 80 }",
        ),
        &[],
    );
    assert_error(&e, &["pool \"api\"", "(key: health)"]);
    assert_error(&e, &["pool \"api\"", "(key: answers)"]);
}

#[test]
fn bad_zone_file_error_names_the_file_and_line() {
    let file = "$ORIGIN svc.example.\n; comment\n@ SOA ns hm (\n  1 2 3 4 5 )\nwww A 192.0.2.1\nbad A 999.0.2.1\nok A 192.0.2.2\n";
    let e = errors(
        "[[zone]]\norigin = \"svc.example.\"\nfile = \"svc.zone\"\n",
        &[("svc.zone", file)],
    );
    assert_error(&e, &["zone \"svc.example.\"", "svc.zone:6:", "(key: file)"]);
    let e = errors(
        "[[zone]]\norigin = \"svc.example.\"\nfile = \"svc.zone\"\n",
        &[("svc.zone", "www A 192.0.2.1\nfoo BOGUSTYPE x\n")],
    );
    assert_error(&e, &["svc.zone:2:"]);
    let e = errors(
        "[[zone]]\norigin = \"svc.example.\"\nfile = \"missing.zone\"\n",
        &[],
    );
    assert_error(&e, &["missing.zone", "cannot read", "(key: file)"]);
    let e = errors(
        "[[zone]]\norigin = \"svc.example.\"\nfile = \"svc.zone\"\n",
        &[(
            "svc.zone",
            "www A 192.0.2.1\nwww.other.example. A 192.0.2.2\n",
        )],
    );
    assert_error(&e, &["svc.zone:2:", "outside the zone"]);
}

#[test]
fn overlapping_zones_are_rejected() {
    let e = errors(
        "[[zone]]\norigin = \"example.\"\n[[zone]]\norigin = \"svc.example.\"\n[[zone]]\norigin = \"EXAMPLE\"\n",
        &[],
    );
    assert_error(
        &e,
        &[
            "zone \"svc.example.\" is at or under zone \"example.\"",
            "(key: origin)",
        ],
    );
    assert_eq!(
        e.iter().filter(|m| m.contains("overlap")).count(),
        3,
        "{e:#?}"
    );
}

#[test]
fn bad_cidr_in_regions_is_rejected() {
    let e = errors(
        "[geo.regions]\neu = [\"10.1.0.0/33\", \"10.1.2.3/16\", \"2001:db8::/48\"]\nus = [\"2001:db8::/48\"]\n",
        &[],
    );
    assert_error(
        &e,
        &[
            "geo region \"eu\"",
            "\"10.1.0.0/33\" is not a CIDR prefix",
            "(key: geo.regions.eu)",
        ],
    );
    assert_error(&e, &["\"10.1.2.3/16\" has host bits set", "10.1.0.0/16"]);
    assert_error(
        &e,
        &[
            "geo region \"us\"",
            "already listed in region \"eu\"",
            "(key: geo.regions.us)",
        ],
    );
}

#[test]
fn bad_duration_strings_are_rejected() {
    let e = errors(
        &pool_toml(
            "A",
            "{ value = \"192.0.2.1\", weight = 1 }",
            "health = { tcp_port = 80, interval = \"5 seconds\", timeout = \"10\", fails = 0 }",
        ),
        &[],
    );
    assert_error(
        &e,
        &["pool \"api\"", "\"5 seconds\"", "(key: health.interval)"],
    );
    assert_error(
        &e,
        &[
            "pool \"api\"",
            "\"10\" has no unit",
            "(key: health.timeout)",
        ],
    );
    assert_error(&e, &["pool \"api\"", "(key: health.fails)"]);
}

#[test]
fn unreadable_mmdb_is_rejected() {
    let e = errors("[geo]\nmmdb = \"nope/GeoLite2-Country.mmdb\"\n", &[]);
    assert_error(
        &e,
        &["geo: mmdb", "GeoLite2-Country.mmdb", "(key: geo.mmdb)"],
    );
    let e = errors(
        "[geo]\nmmdb = \"garbage.mmdb\"\n",
        &[("garbage.mmdb", "not a maxmind db")],
    );
    assert_error(&e, &["garbage.mmdb", "(key: geo.mmdb)"]);
}

#[test]
fn every_error_is_reported_not_just_the_first() {
    let t = r#"
        [geo.regions]
        eu = ["bogus"]
        [[zone]]
        origin = "a.test."
        [[zone.pool]]
        name = "x"
        type = "A"
        answers = 0
        members = [{ value = "nope", weight = -1, region = "mars" }]
        [[zone]]
        origin = "b.a.test."
    "#;
    let e = errors(t, &[]);
    for key in [
        "geo.regions.eu",
        "answers",
        "members.value",
        "members.weight",
        "members.region",
    ] {
        assert_error(&e, &[&format!("(key: {key})")]);
    }
    assert_error(&e, &["overlap"]);
}

#[test]
fn relative_zone_file_is_resolved_against_base_dir_and_absolute_is_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("abs.zone");
    std::fs::write(&path, "www A 192.0.2.1\n").expect("write");
    let cfg = ZoneConfig {
        origin: "abs.test".into(),
        file: Some(path),
        ttl: 30,
        pool: vec![],
    };
    let z = LocalZones::from_config(&[cfg], &GeoConfig::default(), Path::new("/nonexistent"))
        .map_err(|e| e.iter().map(ToString::to_string).collect::<Vec<_>>())
        .expect("absolute path ignores base_dir");
    let a = ask(&z, "www.abs.test.", RecordType::A, &from("192.0.2.1"));
    assert!(matches!(a.answer[0].data, RData::A(_)));
}

// ---------------------------------------------------------------- mmdb

/// Writes a minimal MaxMind DB (IPv4 tree, 24-bit records) mapping each
/// prefix to `{country: {iso_code}}`, as GeoLite2-Country does.
fn write_mmdb(path: &Path, entries: &[(&str, &str)]) {
    fn string(out: &mut Vec<u8>, s: &str) {
        assert!(s.len() < 29);
        out.push((2 << 5) | s.len() as u8);
        out.extend_from_slice(s.as_bytes());
    }
    fn uint16(out: &mut Vec<u8>, v: u16) {
        out.push((5 << 5) | 2);
        out.extend_from_slice(&v.to_be_bytes());
    }
    #[derive(Clone, Copy)]
    enum Rec {
        Empty,
        Node(usize),
        Data(usize),
    }
    let mut nodes: Vec<[Rec; 2]> = vec![[Rec::Empty, Rec::Empty]];
    let mut data = Vec::new();
    for (cidr, iso) in entries {
        let net: ipnet::Ipv4Net = cidr.parse().expect("cidr");
        let offset = data.len();
        data.push((7 << 5) | 1);
        string(&mut data, "country");
        data.push((7 << 5) | 1);
        string(&mut data, "iso_code");
        string(&mut data, iso);
        let bits = u32::from(net.network());
        let mut node = 0;
        for i in 0..net.prefix_len() {
            let bit = ((bits >> (31 - i)) & 1) as usize;
            if i + 1 == net.prefix_len() {
                nodes[node][bit] = Rec::Data(offset);
            } else {
                node = match nodes[node][bit] {
                    Rec::Node(n) => n,
                    _ => {
                        nodes.push([Rec::Empty, Rec::Empty]);
                        let n = nodes.len() - 1;
                        nodes[node][bit] = Rec::Node(n);
                        n
                    }
                };
            }
        }
    }
    let count = nodes.len();
    let mut out = Vec::new();
    for pair in &nodes {
        for rec in pair {
            let v = match *rec {
                Rec::Empty => count,
                Rec::Node(n) => n,
                Rec::Data(off) => count + 16 + off,
            } as u32;
            out.extend_from_slice(&v.to_be_bytes()[1..]);
        }
    }
    out.extend_from_slice(&[0u8; 16]);
    out.extend_from_slice(&data);
    out.extend_from_slice(b"\xab\xcd\xefMaxMind.com");
    out.push((7 << 5) | 9);
    string(&mut out, "node_count");
    out.push((6 << 5) | 4);
    out.extend_from_slice(&(count as u32).to_be_bytes());
    string(&mut out, "record_size");
    uint16(&mut out, 24);
    string(&mut out, "ip_version");
    uint16(&mut out, 4);
    string(&mut out, "database_type");
    string(&mut out, "Test-Country");
    string(&mut out, "languages");
    out.extend_from_slice(&[0, 11 - 7]); // empty array (extended type 11)
    string(&mut out, "binary_format_major_version");
    uint16(&mut out, 2);
    string(&mut out, "binary_format_minor_version");
    uint16(&mut out, 0);
    string(&mut out, "build_epoch");
    out.extend_from_slice(&[8, 9 - 7]); // uint64 (extended type 9), 8 bytes
    out.extend_from_slice(&0u64.to_be_bytes());
    string(&mut out, "description");
    out.push(7 << 5); // empty map
    std::fs::write(path, out).expect("write mmdb");
}

fn mmdb_zones(pool_members: &str) -> Result<LocalZones, Vec<ZonesError>> {
    let dir = tempfile::tempdir().expect("tempdir");
    write_mmdb(
        &dir.path().join("country.mmdb"),
        &[("10.3.0.0/16", "DE"), ("10.4.0.0/16", "FR")],
    );
    let text = format!(
        "[geo]\nmmdb = \"country.mmdb\"\n[geo.regions]\neu = [\"10.1.0.0/16\"]\n\
         [[zone]]\norigin = \"g.test.\"\n[[zone.pool]]\nname = \"www\"\ntype = \"A\"\nmembers = [{pool_members}]\n"
    );
    let top: Top = toml::from_str(&text).expect("toml");
    LocalZones::from_config(&top.zone, &top.geo, dir.path())
}

const MMDB_MEMBERS: &str = r#"{ value = "192.0.2.1", weight = 1, region = "DE" },
    { value = "192.0.2.2", weight = 1, region = "eu" },
    { value = "192.0.2.3", weight = 1 }"#;

#[test]
fn mmdb_country_code_is_the_region_when_no_prefix_matched() {
    let z = mmdb_zones(MMDB_MEMBERS)
        .map_err(|e| format!("{e:?}"))
        .expect("valid");
    assert_eq!(
        values_seen(&z, "www.g.test.", &from("10.3.7.7"), 30),
        set(&["192.0.2.1"])
    );
    // Configured prefixes take precedence over the DB.
    assert_eq!(
        values_seen(&z, "www.g.test.", &from("10.1.7.7"), 30),
        set(&["192.0.2.2"])
    );
    // A country no member serves gets the global members.
    assert_eq!(
        values_seen(&z, "www.g.test.", &from("10.4.7.7"), 30),
        set(&["192.0.2.3"])
    );
    // The DB's network length is the ECS scope.
    let a = ask(
        &z,
        "www.g.test.",
        RecordType::A,
        &with_ecs("192.0.2.200", "10.3.1.0", 24),
    );
    assert_eq!(
        (data(&a), a.ecs_scope),
        (vec!["192.0.2.1".to_string()], Some(16))
    );
}

#[test]
fn country_code_regions_need_an_mmdb_and_upper_case() {
    let e = errors(
        &pool_toml(
            "A",
            "{ value = \"192.0.2.1\", weight = 1, region = \"DE\" }",
            "",
        ),
        &[],
    );
    assert_error(&e, &["unknown region \"DE\"", "(key: members.region)"]);
    let e =
        mmdb_zones("{ value = \"192.0.2.1\", weight = 1, region = \"de\" }").expect_err("rejected");
    assert!(e[0].to_string().contains("or an ISO country code"), "{e:?}");
}

// ---------------------------------------------------------------- demo

#[test]
fn demo_config_builds_and_answers_as_documented() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let Ok(text) = std::fs::read_to_string(dir.join("geo-demo.toml")) else {
        return; // the demo is optional; nothing to check without it
    };
    let top: Top = toml::from_str(&text).expect("demo TOML");
    let z = LocalZones::from_config(&top.zone, &top.geo, &dir)
        .map_err(|e| e.iter().map(ToString::to_string).collect::<Vec<_>>())
        .expect("demo config is valid");
    let eu = set(&["192.0.2.20", "192.0.2.21"]);
    assert_eq!(
        values_seen(&z, "api.demo.test.", &from("127.0.1.1"), 100),
        eu
    );
    let c = with_ecs("127.0.0.1", "10.2.0.0", 24);
    let a = ask(&z, "api.demo.test.", RecordType::A, &c);
    assert_eq!(
        (data(&a), a.ecs_scope),
        (vec!["198.51.100.20".to_string()], Some(16))
    );
    let docs = ask(&z, "docs.demo.test.", RecordType::A, &from("127.0.0.1"));
    assert_eq!(docs.answer.len(), 2, "CNAME to the www pool, chased");
    let nx = ask(&z, "nope.demo.test.", RecordType::A, &from("127.0.0.1"));
    assert_eq!(
        (nx.rcode, nx.authority[0].ttl),
        (ResponseCode::NXDomain, 60)
    );
    let wild = ask(
        &z,
        "pr-42.preview.demo.test.",
        RecordType::A,
        &from("127.0.0.1"),
    );
    assert_eq!(data(&wild), vec!["192.0.2.99"]);
}
