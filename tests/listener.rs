//! The listeners and the query front end, with stand-in resolvers: framing,
//! malformed input, EDNS, truncation, access control.

mod support;

use hickory_proto::op::{Edns, Message, ResponseCode};
use hickory_proto::rr::RecordType;
use resolvd::config::{Config, Dur};
use resolvd::daemon::Daemon;
use resolvd::metrics::Metrics;
use resolvd::resolve::{Refuse, Resolve};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use support::fixed::Fixed;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

const T: u64 = 3000;

fn cfg() -> Config {
    support::fixed::config()
}

async fn daemon(c: &Config, r: Arc<dyn Resolve>) -> (Daemon, SocketAddr) {
    let d = Daemon::start_with(c, r, Arc::new(Metrics::default()))
        .await
        .unwrap();
    let a = d.local_addrs()[0];
    (d, a)
}

async fn raw(addr: SocketAddr, bytes: &[u8]) -> Option<Vec<u8>> {
    exchange_udp_raw_from("127.0.0.1".parse().unwrap(), addr, bytes, 500)
        .await
        .map(|(_, b)| b)
}

async fn still_serving(addr: SocketAddr) {
    let m = query_udp(addr, "alive.test.", RecordType::A, T)
        .await
        .expect("server still answers");
    assert_eq!(m.queries[0].name().to_string(), "alive.test.");
}

#[tokio::test(flavor = "multi_thread")]
async fn udp_query_is_answered_servfail_without_a_resolver() {
    let (_d, addr) = daemon(&cfg(), Arc::new(Refuse)).await;
    let m = query_udp(addr, "example.com.", RecordType::A, T)
        .await
        .unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    assert!(m.metadata.recursion_available);
    assert_eq!(m.queries[0].name().to_string(), "example.com.");
}

#[tokio::test(flavor = "multi_thread")]
async fn udp_query_gets_the_resolvers_answer() {
    let (_d, addr) = daemon(&cfg(), Arc::new(Fixed { n: 2, delay_ms: 0 })).await;
    let m = query_udp(addr, "example.com.", RecordType::A, T)
        .await
        .unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(m.answers.len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn tcp_pipelined_queries_are_answered_on_one_connection() {
    // The first query is slow: answers may come back in any order.
    let (_d, addr) = daemon(&cfg(), Arc::new(Fixed { n: 1, delay_ms: 50 })).await;
    let mut s = tcp_connect(addr, T).await.unwrap();
    let qs: Vec<Message> = ["a.test.", "b.test.", "c.test."]
        .iter()
        .map(|n| make_query(n, RecordType::A, false))
        .collect();
    for q in &qs {
        tcp_write_msg(&mut s, q).await.unwrap();
    }
    let mut ids = Vec::new();
    for _ in 0..3 {
        let m = tcp_read_msg(&mut s, T)
            .await
            .expect("answer on the same connection");
        assert_eq!(m.answers.len(), 1);
        ids.push(m.metadata.id);
    }
    let mut want: Vec<u16> = qs.iter().map(|q| q.metadata.id).collect();
    want.sort();
    ids.sort();
    assert_eq!(ids, want);
}

#[tokio::test(flavor = "multi_thread")]
async fn tcp_idle_connection_is_closed() {
    let mut c = cfg();
    c.server.tcp_idle_timeout = Dur::millis(300);
    let (_d, addr) = daemon(&c, Arc::new(Refuse)).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut b = [0u8; 1];
    let r = tokio::time::timeout(Duration::from_secs(3), s.read(&mut b)).await;
    assert!(
        matches!(r, Ok(Ok(0)) | Ok(Err(_))),
        "closed by the server: {r:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tcp_client_stalled_mid_frame_is_cut_off() {
    let mut c = cfg();
    c.server.tcp_idle_timeout = Dur::millis(300);
    let (_d, addr) = daemon(&c, Arc::new(Refuse)).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&[0, 40, 1, 2, 3]).await.unwrap();
    let mut b = [0u8; 1];
    let r = tokio::time::timeout(Duration::from_secs(3), s.read(&mut b)).await;
    assert!(matches!(r, Ok(Ok(0)) | Ok(Err(_))), "closed: {r:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn tcp_connections_over_the_cap_are_closed() {
    let mut c = cfg();
    c.server.tcp_max_connections = 2;
    let (_d, addr) = daemon(&c, Arc::new(Refuse)).await;
    let _a = TcpStream::connect(addr).await.unwrap();
    let _b = TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut third = TcpStream::connect(addr).await.unwrap();
    let mut b = [0u8; 1];
    let r = tokio::time::timeout(Duration::from_secs(2), third.read(&mut b)).await;
    assert!(matches!(r, Ok(Ok(0)) | Ok(Err(_))), "third closed: {r:?}");
}

fn header(id: u16, flags: u16, qd: u16, ar: u16) -> Vec<u8> {
    let mut p = Vec::new();
    for v in [id, flags, qd, 0, 0, ar] {
        p.extend_from_slice(&v.to_be_bytes());
    }
    p
}

fn rcode_of(reply: &[u8]) -> u16 {
    u16::from_be_bytes([reply[2], reply[3]]) & 0xf
}

#[tokio::test(flavor = "multi_thread")]
async fn packet_shorter_than_a_header_is_dropped() {
    let (_d, addr) = daemon(&cfg(), Arc::new(Refuse)).await;
    assert!(raw(addr, &[1, 2, 3, 4, 5]).await.is_none());
    still_serving(addr).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn response_packets_are_dropped() {
    let (_d, addr) = daemon(&cfg(), Arc::new(Refuse)).await;
    let mut p = header(7, 0x8000, 1, 0);
    p.extend_from_slice(b"\x01a\x00\x00\x01\x00\x01");
    assert!(raw(addr, &p).await.is_none());
    still_serving(addr).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_questions_get_formerr() {
    let (_d, addr) = daemon(&cfg(), Arc::new(Refuse)).await;
    let mut p = header(7, 0x0100, 2, 0);
    p.extend_from_slice(b"\x01a\x00\x00\x01\x00\x01\x01b\x00\x00\x01\x00\x01");
    let r = raw(addr, &p).await.unwrap();
    assert_eq!(rcode_of(&r), 1);
    assert_eq!(&r[0..2], &[0, 7]);
    still_serving(addr).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn truncated_or_compressed_question_gets_formerr() {
    let (_d, addr) = daemon(&cfg(), Arc::new(Refuse)).await;
    for body in [
        &b"\x05ab"[..],
        b"\xc0\x0c\x00\x01\x00\x01",
        b"\x01a\x00\x00",
    ] {
        let mut p = header(9, 0x0100, 1, 0);
        p.extend_from_slice(body);
        let r = raw(addr, &p).await.expect("FORMERR reply");
        assert_eq!(rcode_of(&r), 1, "{body:?}");
    }
    still_serving(addr).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn opcodes_other_than_query_get_notimp() {
    let (_d, addr) = daemon(&cfg(), Arc::new(Refuse)).await;
    let mut p = header(5, 2 << 11, 1, 0); // STATUS
    p.extend_from_slice(b"\x01a\x00\x00\x01\x00\x01");
    assert_eq!(rcode_of(&raw(addr, &p).await.unwrap()), 4);
    let mut p = header(5, 5 << 11, 0, 0); // UPDATE-like, no question
    assert_eq!(rcode_of(&raw(addr, &p).await.unwrap()), 4);
    p.clear();
    still_serving(addr).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn classes_other_than_in_are_refused_or_notimp() {
    let (_d, addr) = daemon(&cfg(), Arc::new(Refuse)).await;
    let mut p = header(5, 0x0100, 1, 0);
    p.extend_from_slice(b"\x07version\x04bind\x00\x00\x10\x00\x03"); // CH TXT
    assert_eq!(rcode_of(&raw(addr, &p).await.unwrap()), 5);
    let mut p = header(5, 0x0100, 1, 0);
    p.extend_from_slice(b"\x01a\x00\x00\x01\x00\x2a"); // class 42
    assert_eq!(rcode_of(&raw(addr, &p).await.unwrap()), 4);
    still_serving(addr).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn random_garbage_never_stops_the_server() {
    use rand::{Rng, SeedableRng};
    let (_d, addr) = daemon(&cfg(), Arc::new(Refuse)).await;
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    for _ in 0..2000 {
        let n = rng.gen_range(0..80);
        let mut p: Vec<u8> = (0..n).map(|_| rng.gen()).collect();
        if p.len() > 5 && rng.gen_bool(0.7) {
            p[2] &= 0x7f; // make it a query so it gets past the QR check
            p[4] = 0;
            p[5] = 1;
        }
        sock.send_to(&p, addr).await.unwrap();
    }
    still_serving(addr).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn opt_is_echoed_with_our_payload_size() {
    let (_d, addr) = daemon(&cfg(), Arc::new(Fixed { n: 1, delay_ms: 0 })).await;
    let q = make_query("x.test.", RecordType::A, true);
    let m = exchange_udp(addr, &q, T).await.unwrap();
    let e = m.edns.as_ref().expect("OPT in reply");
    assert_eq!(e.max_payload(), 1232);
    let q = make_query("x.test.", RecordType::A, false);
    let m = exchange_udp(addr, &q, T).await.unwrap();
    assert!(m.edns.is_none(), "no OPT without one in the query");
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_edns_version_gets_badvers() {
    let (_d, addr) = daemon(&cfg(), Arc::new(Refuse)).await;
    let mut q = make_query("x.test.", RecordType::A, false);
    let mut e = Edns::new();
    e.set_version(1);
    e.set_max_payload(1232);
    q.set_edns(e);
    let m = exchange_udp(addr, &q, T).await.unwrap();
    // RCODE 16 is both BADVERS and BADSIG; hickory names it the latter.
    assert_eq!(u16::from(m.metadata.response_code), 16);
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_udp_reply_is_truncated_and_complete_over_tcp() {
    let (_d, addr) = daemon(&cfg(), Arc::new(Fixed { n: 60, delay_ms: 0 })).await;
    let q = make_query("big.test.", RecordType::A, false);
    let m = exchange_udp(addr, &q, T).await.unwrap();
    assert!(m.metadata.truncation, "60 A records exceed 512 bytes");
    assert!(m.answers.is_empty());
    let m = exchange_tcp(addr, &q, T).await.unwrap();
    assert!(!m.metadata.truncation);
    assert_eq!(m.answers.len(), 60);
    // With a 4096-byte EDNS buffer the same answer fits in UDP.
    let mut q = make_query("big.test.", RecordType::A, true);
    q.edns.as_mut().unwrap().set_max_payload(4096);
    let m = exchange_udp(addr, &q, T).await.unwrap();
    assert!(!m.metadata.truncation);
    assert_eq!(m.answers.len(), 60);
}

#[tokio::test(flavor = "multi_thread")]
async fn clients_outside_allow_are_refused() {
    let mut c = cfg();
    c.server.listen = vec!["127.0.0.1:0".parse().unwrap()];
    c.server.allow = vec!["127.0.0.1/32".parse().unwrap()];
    let (_d, addr) = daemon(&c, Arc::new(Fixed { n: 1, delay_ms: 0 })).await;
    let m = query_udp_from(
        "127.0.0.2".parse().unwrap(),
        addr,
        "x.test.",
        RecordType::A,
        T,
    )
    .await
    .unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    assert!(m.answers.is_empty());
    let m = query_udp_from(
        "127.0.0.1".parse().unwrap(),
        addr,
        "x.test.",
        RecordType::A,
        T,
    )
    .await
    .unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
}

#[tokio::test(flavor = "multi_thread")]
async fn ipv6_loopback_is_served() {
    let mut c = cfg();
    c.server.listen = vec!["[::1]:0".parse().unwrap()];
    let Ok(d) = Daemon::start_with(
        &c,
        Arc::new(Fixed { n: 1, delay_ms: 0 }),
        Arc::new(Metrics::default()),
    )
    .await
    else {
        panic!("cannot bind [::1]");
    };
    let addr = d.local_addrs()[0];
    let sock = UdpSocket::bind("[::1]:0").await.unwrap();
    let q = make_query("x.test.", RecordType::A, false);
    sock.send_to(&q.to_vec().unwrap(), addr).await.unwrap();
    let mut buf = vec![0u8; 1500];
    let (n, from) = tokio::time::timeout(Duration::from_millis(T), sock.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(from, addr, "reply leaves from the address asked");
    let m = Message::from_vec(&buf[..n]).unwrap();
    assert_eq!(m.answers.len(), 1);
    let m = query_tcp(addr, "x.test.", RecordType::A, T).await.unwrap();
    assert_eq!(m.answers.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_lets_in_flight_queries_finish() {
    let mut c = cfg();
    c.server.shutdown_grace = Dur::secs(3);
    let (d, addr) = daemon(
        &c,
        Arc::new(Fixed {
            n: 1,
            delay_ms: 400,
        }),
    )
    .await;
    let pending =
        tokio::spawn(async move { query_udp(addr, "slow.test.", RecordType::A, T).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    d.shutdown().await;
    let m = pending
        .await
        .unwrap()
        .expect("in-flight query answered during shutdown");
    assert_eq!(m.answers.len(), 1);
    assert!(
        query_udp(addr, "after.test.", RecordType::A, 300)
            .await
            .is_none(),
        "no longer serving"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn queries_beyond_max_pending_are_dropped() {
    let mut c = cfg();
    c.resolver.max_pending = 1;
    let (d, addr) = daemon(
        &c,
        Arc::new(Fixed {
            n: 1,
            delay_ms: 500,
        }),
    )
    .await;
    let first = tokio::spawn(async move { query_udp(addr, "one.test.", RecordType::A, T).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let second = query_udp(addr, "two.test.", RecordType::A, 300).await;
    assert!(second.is_none(), "dropped while the only slot is busy");
    assert!(
        first.await.unwrap().is_some(),
        "the pending one is answered"
    );
    assert!(d.handler().stats().contains("dropped 1"));
    // Cached answers need no slot.
    assert!(query_udp(addr, "one.test.", RecordType::A, T)
        .await
        .is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn tcp_burst_of_pipelined_queries_in_one_segment_is_fully_answered() {
    let (_d, addr) = daemon(&cfg(), Arc::new(Fixed { n: 1, delay_ms: 0 })).await;
    // Warm the cache so most answers take the batched fast path.
    for i in 0..50 {
        query_udp(addr, &format!("h{i}.test."), RecordType::A, T)
            .await
            .unwrap();
    }
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut burst = Vec::new();
    let mut ids = Vec::new();
    for i in 0..300 {
        let q = make_query(&format!("h{}.test.", i % 60), RecordType::A, false);
        ids.push(q.metadata.id);
        let b = q.to_vec().unwrap();
        burst.extend_from_slice(&(b.len() as u16).to_be_bytes());
        burst.extend_from_slice(&b);
    }
    s.write_all(&burst).await.unwrap();
    let mut got = Vec::new();
    for _ in 0..300 {
        let m = tcp_read_msg(&mut s, T)
            .await
            .expect("every pipelined query answered");
        assert_eq!(m.answers.len(), 1);
        got.push(m.metadata.id);
    }
    got.sort();
    ids.sort();
    assert_eq!(got, ids);
}

/// Binds a plain UDP socket (no SO_REUSEPORT) on `addr`: that succeeds only
/// once every one of the daemon's sockets there is closed.
fn udp_port_is_free(addr: SocketAddr) -> bool {
    std::net::UdpSocket::bind(addr).is_ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_under_udp_load_closes_every_socket_within_the_grace() {
    let mut c = cfg();
    c.server.listen = vec!["127.222.0.1:0".parse().unwrap()];
    c.server.shutdown_grace = Dur::secs(1);
    let grace = Duration::from_secs(1);
    let (d, addr) = daemon(&c, Arc::new(Fixed { n: 1, delay_ms: 0 })).await;
    query_udp(addr, "hot.test.", RecordType::A, T)
        .await
        .expect("warm-up answered");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop_client = stop.clone();
    // Hits, with a miss every tenth packet so resolutions are in flight
    // too; bounded in packets and in time.
    let client = tokio::spawn(async move {
        let s = UdpSocket::bind("127.222.0.9:0").await.unwrap();
        let hit = make_query("hot.test.", RecordType::A, false)
            .to_vec()
            .unwrap();
        let started = std::time::Instant::now();
        let (mut sent, mut answered) = (0u32, 0u32);
        let mut buf = vec![0u8; 2048];
        while !stop_client.load(std::sync::atomic::Ordering::Relaxed)
            && sent < 200_000
            && started.elapsed() < Duration::from_secs(10)
        {
            let pkt = if sent % 10 == 9 {
                make_query(&format!("m{sent}.test."), RecordType::A, false)
                    .to_vec()
                    .unwrap()
            } else {
                hit.clone()
            };
            let _ = s.send_to(&pkt, addr).await;
            sent += 1;
            while s.try_recv_from(&mut buf).is_ok() {
                answered += 1;
            }
            if sent % 32 == 0 {
                tokio::task::yield_now().await;
            }
        }
        (sent, answered)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!udp_port_is_free(addr), "the daemon holds the port");
    let t0 = std::time::Instant::now();
    d.shutdown().await;
    while !udp_port_is_free(addr) && t0.elapsed() <= grace {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = t0.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (sent, answered) = client.await.unwrap();
    assert!(
        udp_port_is_free(addr),
        "every UDP socket closed within the {grace:?} grace (waited {took:?}; client sent {sent})"
    );
    assert!(took <= grace, "took {took:?}");
    assert!(
        answered > 100,
        "the load was being served ({answered} of {sent})"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn resolved_udp_reply_leaves_from_the_address_and_port_asked() {
    let mut c = cfg();
    c.server.listen = vec![
        "127.222.0.1:0".parse().unwrap(),
        "127.222.0.2:0".parse().unwrap(),
    ];
    // A slow resolver: every answer comes from a task on the runtime.
    let (d, _) = daemon(&c, Arc::new(Fixed { n: 1, delay_ms: 20 })).await;
    let addrs: Vec<SocketAddr> = d.local_addrs().to_vec();
    assert_eq!(addrs.len(), 2);
    assert_ne!(addrs[0].port(), addrs[1].port());
    let mut asked = 0;
    for (i, &a) in addrs.iter().enumerate() {
        // Several client ports, so both SO_REUSEPORT sockets of the address
        // are likely to get some.
        for j in 0..6 {
            let q = make_query(&format!("miss{i}-{j}.test."), RecordType::A, false);
            let (from, reply) =
                exchange_udp_raw_from("127.222.0.9".parse().unwrap(), a, &q.to_vec().unwrap(), T)
                    .await
                    .expect("miss answered");
            assert_eq!(from, a, "reply to a query sent to {a} came from {from}");
            let m = Message::from_vec(&reply).unwrap();
            assert_eq!(m.metadata.id, q.metadata.id);
            assert_eq!(m.answers.len(), 1);
            asked += 1;
        }
    }
    let stats = d.handler().stats();
    assert!(
        stats.contains(&format!("\nmisses {asked}\n")),
        "all were misses: {stats}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_udp_sockets_close_soon_after_shutdown() {
    // No packet comes to wake the listener threads: they must notice the
    // shutdown on their own (the receive timeout).
    let mut c = cfg();
    c.server.listen = vec!["127.222.0.5:0".parse().unwrap()];
    c.server.shutdown_grace = Dur::secs(1);
    let (d, addr) = daemon(&c, Arc::new(Fixed { n: 1, delay_ms: 0 })).await;
    query_udp(addr, "once.test.", RecordType::A, T)
        .await
        .expect("answered");
    let t0 = std::time::Instant::now();
    d.shutdown().await;
    assert!(
        udp_port_is_free(addr),
        "sockets closed when shutdown returns ({:?})",
        t0.elapsed()
    );
    assert!(t0.elapsed() < Duration::from_secs(1));
}

#[tokio::test(flavor = "multi_thread")]
async fn reload_closes_a_removed_udp_address_and_serves_an_added_one() {
    let mut c = cfg();
    c.server.listen = vec!["127.222.0.6:0".parse().unwrap()];
    let (d, old) = daemon(&c, Arc::new(Fixed { n: 1, delay_ms: 0 })).await;
    query_udp(old, "kept.test.", RecordType::A, T)
        .await
        .expect("answered before the reload");
    let mut next = c.clone();
    next.server.listen = vec!["127.222.0.7:0".parse().unwrap()];
    d.reload(&next).expect("reload accepted");
    let new = d.local_addrs()[0];
    assert_eq!(new.ip().to_string(), "127.222.0.7");
    // A cache hit (answered on the new socket's thread) and a miss
    // (resolved on the runtime), both from the new address.
    for name in ["kept.test.", "fresh.test."] {
        let q = make_query(name, RecordType::A, false);
        let (from, reply) =
            exchange_udp_raw_from("127.222.0.9".parse().unwrap(), new, &q.to_vec().unwrap(), T)
                .await
                .unwrap_or_else(|| panic!("{name} answered on the added address"));
        assert_eq!(from, new);
        assert_eq!(Message::from_vec(&reply).unwrap().answers.len(), 1);
    }
    // The removed address's threads notice within their receive timeout.
    let t0 = std::time::Instant::now();
    while !udp_port_is_free(old) && t0.elapsed() < Duration::from_secs(2) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        udp_port_is_free(old),
        "removed address still bound after {:?}",
        t0.elapsed()
    );
    d.shutdown().await;
}
