//! Forward and stub zones (`[[forward]]`) against the simulated hierarchy,
//! and a forward zone over DNS over TLS to a second resolvd.
//! Addresses: 127.210.0.0/24 – 127.213.0.0/24.

mod support;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use resolvd::daemon::Daemon;
use resolvd::handler::Transport;
use resolvd::resolve::forward::{ForwardConfig, ForwardTls};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use support::dot::{dot_server, Certs};
use support::under_test::{config_for, root_zone, start};
use support::*;

/// root .1 → test. .2 → corp.test. at .3 (the public view)
/// Internal servers, reachable only through `[[forward]]`:
///   .4 corp.test. (internal view; delegates dev.corp.test. to .5)
///   .5 dev.corp.test.
///   .6 lab.corp.test.
fn world(n: u8) -> Vec<ServerSpec> {
    let root = root_zone(n, &[("test", 2)]);
    let tld = format!(
        "$ORIGIN test.
$TTL 86400
@ SOA ns1 hostmaster 1 3600 600 86400 300
@ NS ns1
ns1 A 127.{n}.0.2
corp NS ns.corp
ns.corp A 127.{n}.0.3
www A 192.0.2.2
"
    );
    let public = format!(
        "$ORIGIN corp.test.
$TTL 300
@ SOA ns hostmaster 1 3600 600 86400 120
@ NS ns
ns A 127.{n}.0.3
www A 192.0.2.80
"
    );
    let internal = format!(
        "$ORIGIN corp.test.
$TTL 300
@ SOA ns hostmaster 2 3600 600 86400 120
@ NS ns
ns A 127.{n}.0.4
www A 10.0.0.1
dev NS ns.dev
ns.dev A 127.{n}.0.5
"
    );
    let dev = format!(
        "$ORIGIN dev.corp.test.
$TTL 300
@ SOA ns hostmaster 1 3600 600 86400 120
@ NS ns
ns A 127.{n}.0.5
app A 10.0.1.1
"
    );
    let lab = format!(
        "$ORIGIN lab.corp.test.
$TTL 300
@ SOA ns hostmaster 1 3600 600 86400 120
@ NS ns
ns A 127.{n}.0.6
x A 10.0.2.1
"
    );
    let a = |h: u8| format!("127.{n}.0.{h}");
    vec![
        ServerSpec::new("a.root-servers.test", &a(1), &[&root]).root(),
        ServerSpec::new("ns1.test", &a(2), &[&tld]),
        ServerSpec::new("ns.corp.test", &a(3), &[&public]),
        ServerSpec::new("internal.corp.test", &a(4), &[&internal]),
        ServerSpec::new("ns.dev.corp.test", &a(5), &[&dev]),
        ServerSpec::new("ns.lab.corp.test", &a(6), &[&lab]),
    ]
}

fn forward(zone: &str, servers: &[String], recursion: bool, fallback: bool) -> ForwardConfig {
    ForwardConfig {
        zone: zone.into(),
        servers: servers.to_vec(),
        recursion,
        fallback,
        tls: None,
    }
}

/// `addr:port` of a simulated server, as a `servers` entry.
fn server(sim: &Sim, addr: &str) -> String {
    sim.addr_of(addr).to_string()
}

#[tokio::test]
async fn forward_zone_asks_forwarder_with_rd_and_caches_its_answer() {
    let sim = Sim::start(world(210)).await;
    let mut cfg = config_for(&sim);
    cfg.forward = vec![forward(
        "corp.test.",
        &[server(&sim, "127.210.0.4")],
        true,
        false,
    )];
    let (_d, addr) = start(&cfg).await;

    let r = ask(addr, "www.corp.test.", RecordType::A).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert_eq!(addrs(&r), vec!["10.0.0.1"], "the forwarder's answer");
    let seen = sim.server("127.210.0.4").queries();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(seen[0].rd, "forwarders are asked with RD=1");
    assert_eq!(
        seen[0].name.to_lowercase(),
        "www.corp.test.",
        "the full name"
    );
    assert!(
        sim.server("127.210.0.3").queries().is_empty(),
        "the public corp.test servers are never asked"
    );
    assert!(
        sim.server("127.210.0.1").queries().is_empty(),
        "no walk from the root for a forwarded name"
    );

    // Cached like any other answer.
    let again = ask(addr, "www.corp.test.", RecordType::A).await;
    assert_eq!(addrs(&again), vec!["10.0.0.1"]);
    assert_eq!(sim.server("127.210.0.4").queries().len(), 1);

    // Names outside the zone are still resolved from the root, RD=0.
    let out = ask(addr, "www.test.", RecordType::A).await;
    assert_eq!(addrs(&out), vec!["192.0.2.2"]);
    assert!(sim.server("127.210.0.2").queries().iter().all(|q| !q.rd));

    // A name the forwarder says does not exist is NXDOMAIN for the client.
    let nx = ask(addr, "nope.corp.test.", RecordType::A).await;
    assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
}

#[tokio::test]
async fn stub_zone_asks_with_rd0_and_follows_referrals_below_it() {
    let sim = Sim::start(world(211)).await;
    let mut cfg = config_for(&sim);
    cfg.forward = vec![forward(
        "corp.test.",
        &[server(&sim, "127.211.0.4")],
        false,
        false,
    )];
    let (_d, addr) = start(&cfg).await;

    let r = ask(addr, "app.dev.corp.test.", RecordType::A).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert_eq!(addrs(&r), vec!["10.0.1.1"]);
    let stub = sim.server("127.211.0.4").queries();
    assert!(!stub.is_empty());
    assert!(
        stub.iter().all(|q| !q.rd),
        "stub servers get RD=0: {stub:?}"
    );
    let below = sim.server("127.211.0.5").queries();
    assert!(
        !below.is_empty() && below.iter().all(|q| !q.rd),
        "the referral to dev.corp.test. was followed: {below:?}"
    );
    assert!(sim.server("127.211.0.3").queries().is_empty());
    assert!(sim.server("127.211.0.1").queries().is_empty());

    let www = ask(addr, "www.corp.test.", RecordType::A).await;
    assert_eq!(addrs(&www), vec!["10.0.0.1"]);
}

/// The world on 127.`n`, with corp.test.'s only forwarder (.4) silent,
/// and resolvd forwarding corp.test. to it with `fallback` as given.
async fn with_a_silent_forwarder(n: u8, fallback: bool) -> (Sim, Daemon, SocketAddr) {
    let sim = Sim::start(world(n)).await;
    let forwarder = format!("127.{n}.0.4");
    sim.server(&forwarder).set_faults(Faults {
        silent: true,
        ..Faults::default()
    });
    let mut cfg = config_for(&sim);
    cfg.forward = vec![forward(
        "corp.test.",
        &[server(&sim, &forwarder)],
        true,
        fallback,
    )];
    let (d, addr) = start(&cfg).await;
    (sim, d, addr)
}

#[tokio::test]
async fn fallback_resolves_from_the_root_when_every_forwarder_fails() {
    let (sim, _d, addr) = with_a_silent_forwarder(212, true).await;

    let r = ask(addr, "www.corp.test.", RecordType::A).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert_eq!(addrs(&r), vec!["192.0.2.80"], "the public answer");
    assert!(!sim.server("127.212.0.4").queries().is_empty());
    assert!(!sim.server("127.212.0.3").queries().is_empty());
}

#[tokio::test]
async fn without_fallback_a_failed_forward_zone_is_servfail() {
    let (sim, _d, addr) = with_a_silent_forwarder(213, false).await;

    let r = ask(addr, "www.corp.test.", RecordType::A).await;
    assert_eq!(r.metadata.response_code, ResponseCode::ServFail);
    assert!(!sim.server("127.213.0.4").queries().is_empty());
    assert!(
        sim.server("127.213.0.3").queries().is_empty(),
        "no fallback to the public servers"
    );
    assert!(sim.server("127.213.0.1").queries().is_empty());
}

#[tokio::test]
async fn the_longest_matching_forward_zone_wins() {
    let sim = Sim::start(world(214)).await;
    let mut cfg = config_for(&sim);
    cfg.forward = vec![
        forward("corp.test.", &[server(&sim, "127.214.0.4")], true, false),
        forward(
            "lab.corp.test.",
            &[server(&sim, "127.214.0.6")],
            false,
            false,
        ),
    ];
    let (_d, addr) = start(&cfg).await;

    let lab = ask(addr, "x.lab.corp.test.", RecordType::A).await;
    assert_eq!(addrs(&lab), vec!["10.0.2.1"]);
    let seen = sim.server("127.214.0.6").queries();
    assert!(!seen.is_empty() && seen.iter().all(|q| !q.rd), "{seen:?}");
    assert!(
        sim.server("127.214.0.4").queries().is_empty(),
        "corp.test.'s forwarder is not asked about lab.corp.test."
    );

    let www = ask(addr, "www.corp.test.", RecordType::A).await;
    assert_eq!(addrs(&www), vec!["10.0.0.1"]);
    assert!(sim.server("127.214.0.4").queries().iter().all(|q| q.rd));
}

#[tokio::test]
async fn root_forward_zone_sends_everything_to_another_resolvd() {
    let sim = Sim::start(world(215)).await;
    // B resolves from the simulated root; A forwards everything to B.
    let mut b_cfg = config_for(&sim);
    b_cfg.server.listen = vec!["127.215.1.1:0".parse().unwrap()];
    let (b, b_addr) = start(&b_cfg).await;
    let mut a_cfg = config_for(&sim);
    a_cfg.server.listen = vec!["127.215.1.2:0".parse().unwrap()];
    // A has no usable root: only the forwarder can answer.
    a_cfg.resolver.root_hints = None;
    a_cfg.forward = vec![forward(".", &[b_addr.to_string()], true, false)];
    let (a, a_addr) = start(&a_cfg).await;

    let r = ask(a_addr, "www.corp.test.", RecordType::A).await;
    assert_eq!(addrs(&r), vec!["192.0.2.80"]);
    let r = ask(a_addr, "www.test.", RecordType::A).await;
    assert_eq!(addrs(&r), vec!["192.0.2.2"]);
    let b_queries = b.handler().metrics.query_counts().queries();
    assert_eq!(b_queries, 2, "B answered A's two questions");
    assert_eq!(a.handler().metrics.upstream_queries.load(Relaxed), 2);
}

fn dot_forward(dot: SocketAddr, name: &str, ca: PathBuf) -> ForwardConfig {
    ForwardConfig {
        zone: "corp.test.".into(),
        servers: vec![dot.to_string()],
        recursion: true,
        fallback: false,
        tls: Some(ForwardTls {
            name: name.into(),
            ca: Some(ca),
        }),
    }
}

#[tokio::test]
async fn forward_zone_over_tls_verifies_and_reuses_one_connection() {
    let sim = Sim::start(world(216)).await;
    let certs = Certs::new();
    let (server, dot) = dot_server(&certs, 216).await;
    let mut cfg = config_for(&sim);
    cfg.forward = vec![dot_forward(dot, "dns.test", certs.path("ca.pem"))];
    let (_d, addr) = start(&cfg).await;

    let r = ask(addr, "www.corp.test.", RecordType::A).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert_eq!(addrs(&r), vec!["192.0.2.1"], "the DoT server's answer");
    // Five more names at once: pipelined on the one connection.
    let asks = (0..5).map(|i| {
        let name = format!("h{i}.corp.test.");
        tokio::spawn(async move { ask(addr, &name, RecordType::A).await })
    });
    for a in asks {
        assert_eq!(addrs(&a.await.unwrap()), vec!["192.0.2.1"]);
    }
    let m = &server.handler().metrics;
    assert_eq!(
        m.query_counts().queries_over(Transport::Dot),
        6,
        "every question went over DoT"
    );
    assert_eq!(m.query_counts().queries_over(Transport::Udp), 0);
    assert_eq!(m.tls_handshakes.load(Relaxed), 1, "one connection, reused");
    assert!(sim.server("127.216.0.3").queries().is_empty());
}

#[tokio::test]
async fn forward_zone_over_tls_rejects_a_certificate_for_another_name() {
    let sim = Sim::start(world(217)).await;
    let certs = Certs::new();
    let (server, dot) = dot_server(&certs, 217).await;
    let mut cfg = config_for(&sim);
    cfg.forward = vec![dot_forward(dot, "other.test", certs.path("ca.pem"))];
    let (_d, addr) = start(&cfg).await;

    let r = ask(addr, "www.corp.test.", RecordType::A).await;
    assert_eq!(r.metadata.response_code, ResponseCode::ServFail);
    let m = &server.handler().metrics;
    assert_eq!(
        m.query_counts().queries_over(Transport::Dot),
        0,
        "no query crossed the link"
    );
    assert_eq!(m.tls_handshakes.load(Relaxed), 0);
    assert!(sim.server("127.217.0.3").queries().is_empty());
}

#[tokio::test]
async fn a_stub_zones_apex_ds_is_asked_of_the_parent_not_the_stub() {
    let sim = Sim::start(world(211)).await;
    let mut cfg = config_for(&sim);
    cfg.forward = vec![forward(
        "corp.test.",
        &[server(&sim, "127.211.0.4")],
        false,
        false,
    )];
    let (_d, addr) = start(&cfg).await;

    let r = ask(addr, "corp.test.", RecordType::DS).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    let ds_at = |a: &str| {
        sim.server(a)
            .queries()
            .iter()
            .filter(|q| q.qtype == RecordType::DS)
            .count()
    };
    assert_eq!(
        ds_at("127.211.0.4"),
        0,
        "the stub's servers hold the child side"
    );
    assert_eq!(ds_at("127.211.0.2"), 1, "test.'s server holds the DS");
}
