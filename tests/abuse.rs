//! Clients that flood, reflection through spoofed sources, and DNS
//! Cookies: response rate limiting with slip, the per-client query limit,
//! and the server side of RFC 7873 / RFC 9018 — from Rust and from `dig`.
//! Clients use 127.186.0.0/16 – 127.189.0.0/16 addresses.

mod support;

use hickory_proto::op::Message;
use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
use hickory_proto::rr::RecordType;
use resolvd::config::Config;
use resolvd::daemon::Daemon;
use resolvd::metrics::Metrics;
use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;
use support::fixed::Fixed;
use support::*;
use tokio::net::UdpSocket;

const T: u64 = 3000;

fn cfg() -> Config {
    support::fixed::config()
}

async fn daemon(c: &Config) -> (Daemon, SocketAddr) {
    let fixed = Arc::new(Fixed { n: 2, delay_ms: 0 });
    let d = Daemon::start_with(c, fixed, Arc::new(Metrics::default()))
        .await
        .unwrap();
    let a = d.local_addrs()[0];
    (d, a)
}

/// What came back for a burst of queries.
#[derive(Debug, Default)]
struct Tally {
    full: usize,
    truncated: usize,
}

/// Sends `n` queries for `name` from `from` without waiting, then counts
/// the replies that arrive within half a second.
async fn burst(from: IpAddr, server: SocketAddr, name: &str, n: u16) -> Tally {
    let sock = UdpSocket::bind(SocketAddr::new(from, 0)).await.unwrap();
    for i in 0..n {
        let mut q = make_query(name, RecordType::A, false);
        q.metadata.id = i;
        sock.send_to(&q.to_vec().unwrap(), server).await.unwrap();
    }
    let mut t = Tally::default();
    let mut buf = vec![0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
    while let Ok(Ok((len, _))) = tokio::time::timeout_at(deadline, sock.recv_from(&mut buf)).await {
        let m = Message::from_vec(&buf[..len]).expect("a DNS reply");
        if m.metadata.truncation {
            assert!(m.answers.is_empty(), "a slip carries no records");
            t.truncated += 1;
        } else {
            assert_eq!(m.answers.len(), 2);
            t.full += 1;
        }
    }
    t
}

#[tokio::test(flavor = "multi_thread")]
async fn flooding_client_gets_rate_limited_with_slips_and_another_is_unaffected() {
    let mut c = cfg();
    c.server.ratelimit.responses_per_second = 10;
    c.server.ratelimit.slip = 2;
    let (d, addr) = daemon(&c).await;
    let flood = burst(
        "127.186.0.1".parse().unwrap(),
        addr,
        "www.example.test.",
        200,
    )
    .await;
    // One second's budget (two if the burst straddles a second), then every
    // second limited response slips and the rest are dropped.
    assert!(flood.full <= 20, "{flood:?}");
    assert!(flood.full >= 10, "{flood:?}");
    assert!(flood.truncated >= 80, "{flood:?}");
    assert!(flood.full + flood.truncated <= 120, "{flood:?}");
    // A client in another /24, at the same time, has its own budget.
    let other = burst("127.187.0.1".parse().unwrap(), addr, "www.example.test.", 5).await;
    assert_eq!(other.full, 5, "{other:?}");
    let stats = d.handler().stats();
    assert!(stats.contains("rrl_slipped "), "{stats}");
}

#[tokio::test(flavor = "multi_thread")]
async fn query_rate_limit_drops_a_flooding_address_only() {
    let mut c = cfg();
    c.server.ratelimit.queries_per_second = 20;
    let (_d, addr) = daemon(&c).await;
    let flood = burst("127.186.1.1".parse().unwrap(), addr, "a.example.test.", 150).await;
    assert!(flood.full + flood.truncated <= 40, "{flood:?}");
    assert!(flood.full >= 20, "{flood:?}");
    let other = burst("127.186.1.2".parse().unwrap(), addr, "a.example.test.", 10).await;
    assert_eq!(other.full, 10, "{other:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn tcp_is_never_rate_limited() {
    let mut c = cfg();
    c.server.ratelimit.responses_per_second = 1;
    c.server.ratelimit.slip = 0;
    let (_d, addr) = daemon(&c).await;
    let mut s = tcp_connect(addr, T).await.expect("connects");
    for _ in 0..20 {
        tcp_write_msg(&mut s, &make_query("t.example.test.", RecordType::A, false))
            .await
            .unwrap();
        let m = tcp_read_msg(&mut s, T).await.expect("answered over TCP");
        assert_eq!(m.answers.len(), 2);
    }
}

fn with_cookie(name: &str, cookie: &[u8]) -> Message {
    let mut q = make_query(name, RecordType::A, true);
    let mut e = q.edns.clone().unwrap_or_default();
    e.options_mut()
        .insert(EdnsOption::Unknown(10, cookie.to_vec()));
    q.set_edns(e);
    q
}

fn reply_cookie(m: &Message) -> Option<Vec<u8>> {
    match m.edns.as_ref()?.option(EdnsCode::Cookie)? {
        EdnsOption::Unknown(10, data) => Some(data.clone()),
        _ => None,
    }
}

const CLIENT_COOKIE: [u8; 8] = [0x24, 0x64, 0xc4, 0xab, 0xcf, 0x10, 0xc9, 0x57];

#[tokio::test(flavor = "multi_thread")]
async fn client_cookie_gets_a_server_cookie_and_a_bad_one_gets_badcookie() {
    let (_d, addr) = daemon(&cfg()).await;
    let m = exchange_udp(addr, &with_cookie("c.example.test.", &CLIENT_COOKIE), T)
        .await
        .unwrap();
    let cookie = reply_cookie(&m).expect("a COOKIE option in the reply");
    assert_eq!(cookie.len(), 24);
    assert_eq!(&cookie[..8], &CLIENT_COOKIE, "our client cookie echoed");
    assert_eq!(cookie[8], 1, "RFC 9018 version 1");
    assert_eq!(m.answers.len(), 2);

    // The server cookie it gave works; one it did not give gets BADCOOKIE
    // (extended RCODE 23) with a fresh cookie, over UDP...
    let m = exchange_udp(addr, &with_cookie("c.example.test.", &cookie), T)
        .await
        .unwrap();
    assert_eq!(m.answers.len(), 2);
    let mut forged = cookie.clone();
    forged[20] ^= 0xff;
    let m = exchange_udp(addr, &with_cookie("c.example.test.", &forged), T)
        .await
        .unwrap();
    assert_eq!(u16::from(m.metadata.response_code), 23, "{m:?}");
    assert!(m.answers.is_empty());
    let fresh = reply_cookie(&m).expect("a fresh cookie with BADCOOKIE");
    assert_eq!(&fresh[..8], &CLIENT_COOKIE);
    // ...and an answer over TCP, which proves the address by itself.
    let m = exchange_tcp(addr, &with_cookie("c.example.test.", &forged), T)
        .await
        .unwrap();
    assert_eq!(m.answers.len(), 2);
    // A malformed cookie option (5 bytes) is a FORMERR (RFC 7873 §5.2.2).
    let m = exchange_udp(addr, &with_cookie("c.example.test.", &[1, 2, 3, 4, 5]), T)
        .await
        .unwrap();
    assert_eq!(u16::from(m.metadata.response_code), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn valid_server_cookie_is_exempt_from_rate_limiting() {
    let mut c = cfg();
    c.server.ratelimit.responses_per_second = 2;
    c.server.ratelimit.slip = 0;
    let (_d, addr) = daemon(&c).await;
    let from: IpAddr = "127.188.0.1".parse().unwrap();
    let first = exchange_udp_from(
        from,
        addr,
        &with_cookie("v.example.test.", &CLIENT_COOKIE),
        T,
    )
    .await
    .unwrap();
    let cookie = reply_cookie(&first).unwrap();
    for i in 0..20 {
        let m = exchange_udp_from(from, addr, &with_cookie("v.example.test.", &cookie), T)
            .await
            .unwrap_or_else(|| panic!("query {i} with a valid cookie was limited"));
        assert_eq!(m.answers.len(), 2);
    }
    // Without the cookie, the same address is limited.
    let plain = burst(from, addr, "v.example.test.", 20).await;
    assert!(plain.full <= 4, "{plain:?}");
}

/// Runs dig against resolvd on 127.0.0.1:`port` (off the async runtime).
async fn dig(port: u16, extra: &[&str]) -> String {
    let mut args: Vec<String> = ["@127.0.0.1", "-p", &port.to_string(), "+tries=1", "+time=2"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    tokio::task::spawn_blocking(move || {
        let out = Command::new("dig")
            .args(&args)
            .output()
            .expect("dig is missing: install Debian package dnsutils");
        String::from_utf8_lossy(&out.stdout).into_owned()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn dig_cookie_exchange_round_trips() {
    let (_d, addr) = daemon(&cfg()).await;
    let port = addr.port();
    let first = dig(port, &["+cookie", "d.example.test.", "A"]).await;
    assert!(first.contains("status: NOERROR"), "{first}");
    // dig checks that the server echoed its client cookie: "(good)".
    let line = first
        .lines()
        .find(|l| l.contains("COOKIE:"))
        .unwrap_or_else(|| panic!("no COOKIE in:\n{first}"));
    assert!(line.contains("(good)"), "{line}");
    let cookie = line
        .split_whitespace()
        .nth(2)
        .unwrap_or_default()
        .to_string();
    assert_eq!(cookie.len(), 48, "client + server cookie in hex: {line}");
    // Sent back, the cookie is accepted; a tampered one gets BADCOOKIE.
    let good = format!("+cookie={cookie}");
    let again = dig(port, &[&good, "+nobadcookie", "d.example.test.", "A"]).await;
    assert!(again.contains("status: NOERROR"), "{again}");
    let mut bad = cookie.into_bytes();
    bad[40] = if bad[40] == b'0' { b'1' } else { b'0' };
    let bad = format!("+cookie={}", String::from_utf8(bad).unwrap());
    let refused = dig(port, &[&bad, "+nobadcookie", "d.example.test.", "A"]).await;
    assert!(refused.contains("status: BADCOOKIE"), "{refused}");
}
