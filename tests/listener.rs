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
