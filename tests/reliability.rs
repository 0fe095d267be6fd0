//! Robustness drills against the simulated hierarchy: forged replies
//! flooding the resolver's upstream ports, 0x20 case randomisation and its
//! fallback, DNS Cookies towards servers, and an upstream outage walked
//! through its three phases.
//! Uses 127.179.0.0/24 – 127.185.0.0/24.

mod support;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use resolvd::config::Dur;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};
use support::under_test::{config_for, root_zone, start};
use support::*;

const T: u64 = 6000;

/// root .1 → test. .2 → example.test. on ns1 (.3) and ns2 (.6), whose
/// records live `ttl` seconds.
fn world(n: u8, ttl: u32) -> Vec<ServerSpec> {
    let root = root_zone(n, &[("test", 2)]);
    let tld = format!(
        "$ORIGIN test.\n$TTL 86400\n@ SOA ns1 hostmaster 1 3600 600 86400 300\n@ NS ns1\n\
         ns1 A 127.{n}.0.2\nexample NS ns1.example\nexample NS ns2.example\n\
         ns1.example A 127.{n}.0.3\nns2.example A 127.{n}.0.6\n"
    );
    let example = format!(
        "$ORIGIN example.test.\n$TTL {ttl}\n@ 300 SOA ns1 hostmaster 1 3600 600 86400 60\n\
         @ 300 NS ns1\n@ 300 NS ns2\nns1 300 A 127.{n}.0.3\nns2 300 A 127.{n}.0.6\n\
         www A 192.0.2.10\nmail A 192.0.2.25\nftp A 192.0.2.21\nsmtp A 192.0.2.22\n\
         imap A 192.0.2.23\n"
    );
    vec![
        ServerSpec::new("a.root-servers.test.", &format!("127.{n}.0.1"), &[&root]).root(),
        ServerSpec::new("ns1.test.", &format!("127.{n}.0.2"), &[&tld]),
        ServerSpec::new("ns1.example.test.", &format!("127.{n}.0.3"), &[&example]),
        ServerSpec::new("ns2.example.test.", &format!("127.{n}.0.6"), &[&example]),
    ]
}

fn example_servers() -> [&'static str; 2] {
    ["ns1.example.test.", "ns2.example.test."]
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_query_names_carry_random_case_and_answers_the_asked_case() {
    let sim = Sim::start(world(180, 300)).await;
    let (_d, addr) = start(&config_for(&sim)).await;
    for name in ["www", "mail", "ftp", "smtp", "imap"] {
        let q = format!("{name}.example.test.");
        let m = ask(addr, &q, RecordType::A).await;
        assert_eq!(m.answers.len(), 1, "{m:?}");
        // The owner name compresses against the question upstream; it
        // must come back as asked, not as randomised.
        assert_eq!(m.answers[0].name.to_string(), q);
    }
    let seen: Vec<String> = example_servers()
        .iter()
        .flat_map(|s| sim.server(s).queries())
        .map(|q| q.name)
        .collect();
    assert!(
        seen.iter()
            .any(|n| n.chars().any(|c| c.is_ascii_uppercase())),
        "no random case upstream: {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn server_that_changes_the_question_case_is_asked_without_0x20() {
    let sim = Sim::start(world(181, 300)).await;
    for s in example_servers() {
        sim.server(s).set_faults(Faults {
            lowercase_question: true,
            ..Default::default()
        });
    }
    let (_d, addr) = start(&config_for(&sim)).await;
    for (name, want) in [
        ("www", "192.0.2.10"),
        ("mail", "192.0.2.25"),
        ("ftp", "192.0.2.21"),
        ("smtp", "192.0.2.22"),
    ] {
        let m = ask(addr, &format!("{name}.example.test."), RecordType::A).await;
        assert_eq!(addrs(&m), vec![want], "{m:?}");
    }
    // Remembered per server: each got one randomised query at most, and
    // was asked plainly from then on.
    for s in example_servers() {
        let seen = sim.server(s).queries();
        let mixed = seen
            .iter()
            .filter(|q| q.name != q.name.to_ascii_lowercase())
            .count();
        assert!(mixed <= 1, "{s} saw {seen:?}");
    }
}

/// An IPv4 + UDP datagram from `src` to `dst` (the kernel fills in the IP
/// checksum and length for IPPROTO_RAW sockets; UDP checksum 0 = none).
fn ipv4_udp(src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) -> Vec<u8> {
    let total = 20 + 8 + payload.len();
    let mut p = Vec::with_capacity(total);
    p.extend_from_slice(&[0x45, 0]);
    p.extend_from_slice(&(total as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 0, 64, 17, 0, 0]);
    p.extend_from_slice(&src.ip().octets());
    p.extend_from_slice(&dst.ip().octets());
    p.extend_from_slice(&src.port().to_be_bytes());
    p.extend_from_slice(&dst.port().to_be_bytes());
    p.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    p
}

/// A forged authoritative answer for `name` pointing at 6.6.6.6.
fn forged_reply(name: &str, id: u16) -> Vec<u8> {
    let name = Name::from_ascii(name).unwrap();
    let mut m = Message::new(id, MessageType::Response, OpCode::Query);
    m.metadata.authoritative = true;
    m.add_query(Query::query(name.clone(), RecordType::A))
        .add_answer(Record::from_rdata(
            name,
            86400,
            RData::A(A(Ipv4Addr::new(6, 6, 6, 6))),
        ));
    m.to_vec().unwrap()
}

fn ephemeral_ports() -> (u16, u16) {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .unwrap_or_else(|_| "32768 60999".into());
    let mut it = text.split_whitespace().filter_map(|x| x.parse().ok());
    (it.next().unwrap_or(32768), it.next().unwrap_or(60999))
}

/// While resolvd waits for a slow server, forged replies with guessed IDs
/// race the real one: one to every port of the ephemeral range from each
/// server's address and port (about 56,000 packets with Linux's default
/// range). Needs root for the raw socket.
async fn spoofing_drill(n: u8, case_randomisation: bool) {
    let sim = Sim::start(world(n, 300)).await;
    for s in example_servers() {
        sim.server(s).set_faults(Faults {
            delay_ms: 1200,
            ..Default::default()
        });
    }
    let mut cfg = config_for(&sim);
    cfg.resolver.initial_timeout = Dur::millis(2500);
    cfg.resolver.max_timeout = Dur::millis(3000);
    cfg.resolver.query_deadline = Dur::secs(8);
    cfg.resolver.qname_case_randomisation = case_randomisation;
    let (_d, addr) = start(&cfg).await;
    // The walk down to example.test. first, so the drill hits its exchange.
    ask(addr, "ftp.example.test.", RecordType::A).await;

    let raw = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::RAW,
        Some(socket2::Protocol::from(libc::IPPROTO_RAW)),
    )
    .expect("a raw socket (the drill needs root)");
    let (lo, hi) = ephemeral_ports();
    let servers: Vec<SocketAddrV4> = example_servers()
        .iter()
        .map(|s| match sim.server(s).addr() {
            std::net::IpAddr::V4(v4) => SocketAddrV4::new(v4, sim.port()),
            other => panic!("IPv4 server expected, got {other}"),
        })
        .collect();
    // Every port of the range, from each server's address: whichever
    // server resolvd asks and whichever port it drew, forgeries hit it.
    let packets: Vec<(Vec<u8>, SocketAddrV4)> = (lo..=hi)
        .flat_map(|port| servers.iter().map(move |src| (*src, port)))
        .map(|(src, port)| {
            let dst = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
            let forged = forged_reply("www.example.test.", rand::random());
            (ipv4_udp(src, dst, &forged), dst)
        })
        .collect();
    let total = packets.len();
    // The client asks from an address the flood does not target (its
    // harness takes any datagram as the reply).
    let client_ip = std::net::IpAddr::from([127, n, 0, 50]);
    let client = tokio::spawn(async move {
        query_udp_from(client_ip, addr, "www.example.test.", RecordType::A, 10_000).await
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let flood = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let mut sent = 0;
        for (p, dst) in &packets {
            if raw.send_to(p, &(*dst).into()).is_ok() {
                sent += 1;
            }
            if started.elapsed() > Duration::from_secs(3) {
                break;
            }
        }
        (sent, started.elapsed())
    });
    let (sent, took) = flood.await.unwrap();
    let m = client.await.unwrap().expect("resolvd replies");
    eprintln!("spoofing drill (0x20 {case_randomisation}): {sent} forged replies in {took:?}");
    assert_eq!(sent, total, "the flood was cut short");
    assert_eq!(
        addrs(&m),
        vec!["192.0.2.10"],
        "forged answer accepted: {m:?}"
    );
    // Nothing forged was cached either.
    let again = query_udp_from(client_ip, addr, "www.example.test.", RecordType::A, T)
        .await
        .expect("resolvd replies");
    assert_eq!(addrs(&again), vec!["192.0.2.10"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_reply_flood_during_resolution_is_never_accepted() {
    spoofing_drill(182, true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_reply_flood_is_stopped_by_id_and_port_alone() {
    spoofing_drill(183, false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_outage_serves_stale_then_fails_fast_then_recovers() {
    let sim = Sim::start(world(184, 1)).await;
    let mut cfg = config_for(&sim);
    cfg.cache.stale_answer_timeout = Dur::millis(300);
    cfg.resolver.query_deadline = Dur::millis(1500);
    let (_d, addr) = start(&cfg).await;
    // Phase 0: healthy. www is cached for 1 s.
    assert_eq!(
        addrs(&ask(addr, "www.example.test.", RecordType::A).await),
        vec!["192.0.2.10"]
    );
    // Phase 1: every server of the zone silent, www expired.
    for s in example_servers() {
        sim.server(s).set_faults(Faults {
            silent: true,
            ..Default::default()
        });
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let started = Instant::now();
    let stale = ask(addr, "www.example.test.", RecordType::A).await;
    let stale_took = started.elapsed();
    assert_eq!(addrs(&stale), vec!["192.0.2.10"], "{stale:?}");
    assert_eq!(stale.answers[0].ttl, 30, "served stale");
    assert!(
        stale_took < Duration::from_millis(1000),
        "stale answer after {stale_took:?}"
    );
    let started = Instant::now();
    let fail = ask(addr, "mail.example.test.", RecordType::A).await;
    let fail_took = started.elapsed();
    assert_eq!(fail.metadata.response_code, ResponseCode::ServFail);
    assert!(
        fail_took < Duration::from_millis(2500),
        "SERVFAIL after {fail_took:?}"
    );
    // Phase 2: the servers are back; fresh answers resume. The failure
    // above is remembered for servfail_ttl, so ask another name, and www
    // (whose refresh runs in the background) until it is fresh.
    for s in example_servers() {
        sim.server(s).set_faults(Faults::default());
    }
    let m = ask(addr, "ftp.example.test.", RecordType::A).await;
    assert_eq!(addrs(&m), vec!["192.0.2.21"], "{m:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = ask(addr, "www.example.test.", RecordType::A).await;
        if m.answers.first().is_some_and(|r| r.ttl <= 1) {
            break;
        }
        assert!(Instant::now() < deadline, "www never fresh again: {m:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_queries_carry_our_client_cookie_and_the_learned_server_cookie() {
    let sim = Sim::start(world(185, 300)).await;
    let mut cfg = config_for(&sim);
    cfg.resolver.qname_minimisation = false;
    let (_d, addr) = start(&cfg).await;
    for name in ["www", "mail", "ftp"] {
        let m = ask(addr, &format!("{name}.example.test."), RecordType::A).await;
        assert_eq!(m.answers.len(), 1, "{m:?}");
    }
    for s in ["a.root-servers.test.", "ns1.test."] {
        let seen = sim.server(s).queries();
        let first = seen[0].cookie.clone().expect("a COOKIE option");
        assert_eq!(first.len(), 8, "first contact: client cookie only");
        for q in &seen[1..] {
            let c = q.cookie.clone().expect("a COOKIE option");
            assert_eq!(&c[..8], &first[..], "one client cookie per server");
            assert_eq!(&c[8..], SIM_SERVER_COOKIE, "the server's cookie sent back");
        }
    }
    // Servers get different client cookies.
    let root = sim.server("a.root-servers.test.").queries()[0]
        .cookie
        .clone();
    let tld = sim.server("ns1.test.").queries()[0].cookie.clone();
    assert_ne!(root, tld);
}

#[tokio::test(flavor = "multi_thread")]
async fn reply_that_does_not_echo_our_client_cookie_is_ignored() {
    let sim = Sim::start(world(179, 300)).await;
    sim.server("ns1.example.test.").set_faults(Faults {
        wrong_client_cookie: true,
        ..Default::default()
    });
    let (_d, addr) = start(&config_for(&sim)).await;
    for name in ["www", "mail", "ftp"] {
        let m = ask(addr, &format!("{name}.example.test."), RecordType::A).await;
        assert_eq!(m.answers.len(), 1, "{m:?}");
    }
    // Every answer came from ns2; ns1's replies were all dropped.
    let ns2: usize = sim.server("ns2.example.test.").queries().len();
    assert!(ns2 >= 3, "ns2 answered {ns2}");
}
