//! Self-tests for the simulated DNS hierarchy in `support`.
//! Each test uses its own 127.N.0.0/24 block so tests can run in parallel.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, Record, RecordType};
use support::*;

const T: u64 = 2000;

/// root (127.N.0.1) → test. (127.N.0.2) → example.test. (127.N.0.3) → sub.example.test. (127.N.0.4)
fn hierarchy(n: u8) -> Vec<ServerSpec> {
    let root = format!(
        "$ORIGIN .
$TTL 86400
@ IN SOA a.root-servers.test. hostmaster.root-servers.test. 1 3600 600 86400 300
@ IN NS a.root-servers.test.
test. IN NS ns1.test.
ns1.test. IN A 127.{n}.0.2
a.root-servers.test. IN A 127.{n}.0.1
"
    );
    let tld = format!(
        "$ORIGIN test.
$TTL 86400
@ SOA ns1 hostmaster 1 3600 600 86400 300
  NS ns1
ns1 A 127.{n}.0.2
example NS ns1.example
ns1.example A 127.{n}.0.3
"
    );
    let example = format!(
        "$ORIGIN example.test.
$TTL 300
@ IN SOA ns1 hostmaster ( 2024010101 ; serial
        1h 10m 1d 60 ) ; refresh retry expire minimum
  IN NS ns1
ns1 IN A 127.{n}.0.3
www IN A 192.0.2.10
www IN AAAA 2001:db8::10
@ 600 IN MX 10 mail
mail IN A 192.0.2.25
@ IN TXT \"v=spf1 -all\" \"second; string\"
alias IN CNAME alias2
alias2 IN CNAME www
out IN CNAME www.elsewhere.test.
*.wild IN A 192.0.2.99
*.wild IN TXT \"wild\"
deep.ent IN A 192.0.2.50
dn IN DNAME example.net.
sub IN NS ns1.sub
sub IN DS 12345 8 2 0123456789abcdef
ns1.sub IN A 127.{n}.0.4
"
    );
    let mut big = String::from("$ORIGIN example.test.\n");
    for i in 1..=40 {
        big.push_str(&format!("big IN A 192.0.2.{i}\n"));
    }
    let example = example + &big;
    let sub = format!(
        "$ORIGIN sub.example.test.
@ 300 SOA ns1 hostmaster 1 3600 600 86400 300
@ 300 NS ns1
ns1 300 A 127.{n}.0.4
host 300 A 192.0.2.77
"
    );
    vec![
        ServerSpec::new("a.root-servers.test.", &format!("127.{n}.0.1"), &[&root]).root(),
        ServerSpec::new("ns1.test.", &format!("127.{n}.0.2"), &[&tld]),
        ServerSpec::new("ns1.example.test.", &format!("127.{n}.0.3"), &[&example]),
        ServerSpec::new("ns1.sub.example.test.", &format!("127.{n}.0.4"), &[&sub]),
    ]
}

fn ex(sim: &Sim) -> SocketAddr {
    sim.addr_of("ns1.example.test.")
}

fn rdatas(records: &[Record]) -> Vec<String> {
    records
        .iter()
        .map(|r| format!("{} {} {}", r.name, r.record_type(), r.data))
        .collect()
}

fn assert_soa(m: &Message, zone: &str, ttl: u32) {
    assert_eq!(m.authorities.len(), 1, "{m}");
    let soa = &m.authorities[0];
    assert_eq!(soa.record_type(), RecordType::SOA);
    assert_eq!(soa.name.to_string(), zone);
    assert_eq!(soa.ttl, ttl, "negative TTL must be min(SOA TTL, MINIMUM)");
}

#[tokio::test]
async fn a_record_is_answered_authoritatively() {
    let sim = Sim::start(hierarchy(10)).await;
    let m = query_udp(ex(&sim), "www.example.test.", RecordType::A, T)
        .await
        .unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.metadata.authoritative);
    assert!(!m.metadata.recursion_available);
    assert_eq!(rdatas(&m.answers), vec!["www.example.test. A 192.0.2.10"]);
    assert_eq!(m.answers[0].ttl, 300);
}

#[tokio::test]
async fn aaaa_mx_txt_and_apex_ns_are_answered() {
    let sim = Sim::start(hierarchy(11)).await;
    let a = ex(&sim);
    let m = query_udp(a, "www.example.test.", RecordType::AAAA, T)
        .await
        .unwrap();
    assert_eq!(
        rdatas(&m.answers),
        vec!["www.example.test. AAAA 2001:db8::10"]
    );
    let m = query_udp(a, "example.test.", RecordType::MX, T)
        .await
        .unwrap();
    assert_eq!(
        rdatas(&m.answers),
        vec!["example.test. MX 10 mail.example.test."]
    );
    assert_eq!(m.answers[0].ttl, 600);
    let m = query_udp(a, "example.test.", RecordType::TXT, T)
        .await
        .unwrap();
    match m.answers[0].data.clone() {
        RData::TXT(t) => {
            let parts: Vec<_> = t
                .txt_data
                .iter()
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .collect();
            assert_eq!(parts, vec!["v=spf1 -all", "second; string"]);
        }
        other => panic!("not TXT: {other:?}"),
    }
    let m = query_udp(a, "example.test.", RecordType::NS, T)
        .await
        .unwrap();
    assert!(m.metadata.authoritative);
    assert_eq!(
        rdatas(&m.answers),
        vec!["example.test. NS ns1.example.test."]
    );
}

#[tokio::test]
async fn root_refers_to_tld_with_glue() {
    let sim = Sim::start(hierarchy(12)).await;
    let root = sim.addr_of("a.root-servers.test");
    let m = query_udp(root, "www.example.test.", RecordType::A, T)
        .await
        .unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(!m.metadata.authoritative);
    assert!(m.answers.is_empty());
    assert_eq!(rdatas(&m.authorities), vec!["test. NS ns1.test."]);
    assert_eq!(rdatas(&m.additionals), vec!["ns1.test. A 127.12.0.2"]);
}

#[tokio::test]
async fn sub_delegation_refers_with_glue_and_parent_answers_ds() {
    let sim = Sim::start(hierarchy(13)).await;
    let a = ex(&sim);
    let m = query_udp(a, "host.sub.example.test.", RecordType::A, T)
        .await
        .unwrap();
    assert!(!m.metadata.authoritative);
    assert_eq!(
        rdatas(&m.authorities),
        vec!["sub.example.test. NS ns1.sub.example.test."]
    );
    assert_eq!(
        rdatas(&m.additionals),
        vec!["ns1.sub.example.test. A 127.13.0.4"]
    );
    // A query for the cut itself is a referral too...
    let m = query_udp(a, "sub.example.test.", RecordType::A, T)
        .await
        .unwrap();
    assert!(!m.metadata.authoritative);
    // ...except DS, which lives on the parent side.
    let m = query_udp(a, "sub.example.test.", RecordType::DS, T)
        .await
        .unwrap();
    assert!(m.metadata.authoritative);
    assert_eq!(m.answers.len(), 1);
    assert_eq!(m.answers[0].record_type(), RecordType::DS);
    // The child answers for its own data.
    let m = query_udp(
        sim.addr_of("127.13.0.4"),
        "host.sub.example.test.",
        RecordType::A,
        T,
    )
    .await
    .unwrap();
    assert_eq!(
        rdatas(&m.answers),
        vec!["host.sub.example.test. A 192.0.2.77"]
    );
}

#[tokio::test]
async fn nxdomain_carries_soa() {
    let sim = Sim::start(hierarchy(14)).await;
    let m = query_udp(ex(&sim), "nope.example.test.", RecordType::A, T)
        .await
        .unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert!(m.metadata.authoritative);
    assert!(m.answers.is_empty());
    assert_soa(&m, "example.test.", 60);
}

#[tokio::test]
async fn nodata_carries_soa() {
    let sim = Sim::start(hierarchy(15)).await;
    let m = query_udp(ex(&sim), "www.example.test.", RecordType::MX, T)
        .await
        .unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.metadata.authoritative);
    assert!(m.answers.is_empty());
    assert_soa(&m, "example.test.", 60);
}

#[tokio::test]
async fn empty_non_terminal_is_nodata() {
    let sim = Sim::start(hierarchy(16)).await;
    let m = query_udp(ex(&sim), "ent.example.test.", RecordType::A, T)
        .await
        .unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty());
    assert_soa(&m, "example.test.", 60);
}

#[tokio::test]
async fn cname_chain_is_followed_within_zone() {
    let sim = Sim::start(hierarchy(17)).await;
    let m = query_udp(ex(&sim), "alias.example.test.", RecordType::A, T)
        .await
        .unwrap();
    assert!(m.metadata.authoritative);
    assert_eq!(
        rdatas(&m.answers),
        vec![
            "alias.example.test. CNAME alias2.example.test.",
            "alias2.example.test. CNAME www.example.test.",
            "www.example.test. A 192.0.2.10",
        ]
    );
    // Out-of-zone target: just the CNAME.
    let m = query_udp(ex(&sim), "out.example.test.", RecordType::A, T)
        .await
        .unwrap();
    assert_eq!(
        rdatas(&m.answers),
        vec!["out.example.test. CNAME www.elsewhere.test."]
    );
    // Asking for the CNAME itself does not follow it.
    let m = query_udp(ex(&sim), "alias.example.test.", RecordType::CNAME, T)
        .await
        .unwrap();
    assert_eq!(m.answers.len(), 1);
}

#[tokio::test]
async fn wildcard_is_synthesized_with_qname_owner() {
    let sim = Sim::start(hierarchy(18)).await;
    let m = query_udp(ex(&sim), "foo.bar.wild.example.test.", RecordType::A, T)
        .await
        .unwrap();
    assert!(m.metadata.authoritative);
    assert_eq!(
        rdatas(&m.answers),
        vec!["foo.bar.wild.example.test. A 192.0.2.99"]
    );
    let m = query_udp(ex(&sim), "x.wild.example.test.", RecordType::AAAA, T)
        .await
        .unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty());
    assert_soa(&m, "example.test.", 60);
    // Wildcards don't apply below an existing name other than the encloser.
    let m = query_udp(ex(&sim), "x.www.example.test.", RecordType::A, T)
        .await
        .unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
}

#[tokio::test]
async fn dname_synthesizes_cname() {
    let sim = Sim::start(hierarchy(19)).await;
    let m = query_udp(ex(&sim), "a.b.dn.example.test.", RecordType::A, T)
        .await
        .unwrap();
    assert!(m.metadata.authoritative);
    assert_eq!(m.answers.len(), 2, "{m}");
    assert_eq!(m.answers[0].record_type(), RecordType::DNAME);
    assert_eq!(
        rdatas(&m.answers[1..]),
        vec!["a.b.dn.example.test. CNAME a.b.example.net."]
    );
}

#[tokio::test]
async fn question_case_id_and_rd_are_echoed_and_opt_returned() {
    let sim = Sim::start(hierarchy(20)).await;
    let mut q = make_query("WwW.ExAmPlE.TeSt.", RecordType::A, true);
    q.metadata.recursion_desired = true;
    let bytes = q.to_vec().unwrap();
    let (_, raw) = exchange_udp_raw_from(IpAddr::from([127, 0, 0, 1]), ex(&sim), &bytes, T)
        .await
        .unwrap();
    // Question section bytes are copied verbatim.
    assert_eq!(&raw[12..12 + 18 + 4], &bytes[12..12 + 18 + 4]);
    let m = Message::from_vec(&raw).unwrap();
    assert_eq!(m.metadata.id, q.metadata.id);
    assert!(m.metadata.recursion_desired);
    assert_eq!(m.edns.as_ref().unwrap().max_payload(), 1232);
    assert_eq!(m.answers.len(), 1);
    let seen = sim.server("ns1.example.test.").queries();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].name, "WwW.ExAmPlE.TeSt.");
    assert!(seen[0].edns && !seen[0].tcp);
    assert_eq!(seen[0].id, q.metadata.id);
}

#[tokio::test]
async fn out_of_zone_query_is_refused() {
    let sim = Sim::start(hierarchy(21)).await;
    let m = query_udp(ex(&sim), "www.other.", RecordType::A, T)
        .await
        .unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
}

#[tokio::test]
async fn garbage_and_multiple_questions_get_formerr() {
    let sim = Sim::start(hierarchy(22)).await;
    let lo = IpAddr::from([127, 0, 0, 1]);
    let garbage = [
        0xab, 0xcd, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0xff, 0xff,
    ];
    let (_, raw) = exchange_udp_raw_from(lo, ex(&sim), &garbage, T)
        .await
        .unwrap();
    assert_eq!(&raw[..2], &[0xab, 0xcd]);
    assert_eq!(raw[3] & 0x0f, 1, "FORMERR");
    // Too short for a header: dropped, and the server keeps working.
    assert!(exchange_udp_raw_from(lo, ex(&sim), &[1, 2, 3], 300)
        .await
        .is_none());
    let mut q = make_query("www.example.test.", RecordType::A, false);
    q.add_query(hickory_proto::op::Query::query(
        "mail.example.test.".parse().unwrap(),
        RecordType::A,
    ));
    let m = exchange_udp(ex(&sim), &q, T).await.unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
    assert!(query_udp(ex(&sim), "www.example.test.", RecordType::A, T)
        .await
        .is_some());
}

#[tokio::test]
async fn large_udp_reply_is_truncated_but_tcp_is_complete() {
    let sim = Sim::start(hierarchy(23)).await;
    let m = query_udp(ex(&sim), "big.example.test.", RecordType::A, T)
        .await
        .unwrap();
    assert!(m.metadata.truncation);
    assert!(m.answers.is_empty());
    let m = exchange_udp(
        ex(&sim),
        &make_query("big.example.test.", RecordType::A, true),
        T,
    )
    .await
    .unwrap();
    assert!(!m.metadata.truncation, "fits in 1232 bytes");
    assert_eq!(m.answers.len(), 40);
    let m = query_tcp(ex(&sim), "big.example.test.", RecordType::A, T)
        .await
        .unwrap();
    assert!(!m.metadata.truncation);
    assert_eq!(m.answers.len(), 40);
}

#[tokio::test]
async fn tcp_serves_two_queries_on_one_connection() {
    let sim = Sim::start(hierarchy(24)).await;
    let mut s = tcp_connect(ex(&sim), T).await.unwrap();
    let q1 = make_query("www.example.test.", RecordType::A, false);
    let q2 = make_query("mail.example.test.", RecordType::A, false);
    tcp_write_msg(&mut s, &q1).await.unwrap();
    let r1 = tcp_read_msg(&mut s, T).await.unwrap();
    tcp_write_msg(&mut s, &q2).await.unwrap();
    let r2 = tcp_read_msg(&mut s, T).await.unwrap();
    assert_eq!(r1.metadata.id, q1.metadata.id);
    assert_eq!(rdatas(&r1.answers), vec!["www.example.test. A 192.0.2.10"]);
    assert_eq!(r2.metadata.id, q2.metadata.id);
    assert_eq!(rdatas(&r2.answers), vec!["mail.example.test. A 192.0.2.25"]);
    let seen = sim.server("127.24.0.3").queries();
    assert_eq!(seen.len(), 2);
    assert!(seen.iter().all(|q| q.tcp));
}

#[tokio::test]
async fn root_hints_and_query_accounting() {
    let sim = Sim::start(hierarchy(25)).await;
    let text = std::fs::read_to_string(sim.root_hints_path()).unwrap();
    assert_eq!(text, sim.root_hints_text());
    assert!(text.contains(".\t3600000\tNS\ta.root-servers.test.\n"));
    assert!(text.contains("a.root-servers.test.\t3600000\tA\t127.25.0.1\n"));
    assert!(!text.contains("ns1.test."));
    assert!(sim.port() > 0);
    query_udp(sim.addr_of("127.25.0.1"), "test.", RecordType::NS, T)
        .await
        .unwrap();
    query_udp(ex(&sim), "www.example.test.", RecordType::A, T)
        .await
        .unwrap();
    assert_eq!(sim.total_queries(), 2);
    assert_eq!(
        sim.server("a.root-servers.test.").queries()[0].qtype,
        RecordType::NS
    );
    sim.clear_queries();
    assert_eq!(sim.total_queries(), 0);
}

#[tokio::test]
async fn extra_additional_is_appended_to_every_reply() {
    let mut specs = hierarchy(26);
    specs[2] = specs[2]
        .clone()
        .extra_additional("www.victim.test. 300 IN A 6.6.6.6");
    let sim = Sim::start(specs).await;
    for name in ["www.example.test.", "nope.example.test."] {
        let m = query_udp(ex(&sim), name, RecordType::A, T).await.unwrap();
        assert_eq!(rdatas(&m.additionals), vec!["www.victim.test. A 6.6.6.6"]);
    }
}

#[tokio::test]
async fn dropping_sim_stops_servers() {
    let sim = Sim::start(hierarchy(27)).await;
    let a = ex(&sim);
    assert!(query_udp(a, "www.example.test.", RecordType::A, T)
        .await
        .is_some());
    drop(sim);
    tokio::task::yield_now().await;
    assert!(query_udp(a, "www.example.test.", RecordType::A, 300)
        .await
        .is_none());
    assert!(query_tcp(a, "www.example.test.", RecordType::A, 300)
        .await
        .is_none());
}

// ---- fault switches ----

#[tokio::test]
async fn fault_silent_times_out_but_records_query() {
    let sim = Sim::start(hierarchy(40)).await;
    let srv = sim.server("ns1.example.test.");
    srv.set_faults(Faults {
        silent: true,
        ..Faults::default()
    });
    assert!(query_udp(ex(&sim), "www.example.test.", RecordType::A, 300)
        .await
        .is_none());
    assert!(query_tcp(ex(&sim), "www.example.test.", RecordType::A, 300)
        .await
        .is_none());
    let seen = srv.queries();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].name, "www.example.test.");
    assert!(!seen[0].tcp && seen[1].tcp);
    srv.set_faults(Faults::default());
    assert!(query_udp(ex(&sim), "www.example.test.", RecordType::A, T)
        .await
        .is_some());
}

#[tokio::test]
async fn fault_rcode_refused() {
    let sim = Sim::start(hierarchy(41)).await;
    sim.server("ns1.example.test.").set_faults(Faults {
        rcode: Some(ResponseCode::Refused),
        ..Faults::default()
    });
    let m = query_udp(ex(&sim), "www.example.test.", RecordType::A, T)
        .await
        .unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    assert!(m.answers.is_empty() && m.authorities.is_empty() && m.additionals.is_empty());
    let m = query_tcp(ex(&sim), "www.example.test.", RecordType::A, T)
        .await
        .unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
}

#[tokio::test]
async fn fault_truncate_udp_sets_tc_while_tcp_answers() {
    let sim = Sim::start(hierarchy(42)).await;
    sim.server("ns1.example.test.").set_faults(Faults {
        truncate_udp: true,
        ..Faults::default()
    });
    let m = query_udp(ex(&sim), "www.example.test.", RecordType::A, T)
        .await
        .unwrap();
    assert!(m.metadata.truncation);
    assert!(m.answers.is_empty());
    assert_eq!(m.queries.len(), 1);
    let m = query_tcp(ex(&sim), "www.example.test.", RecordType::A, T)
        .await
        .unwrap();
    assert!(!m.metadata.truncation);
    assert_eq!(rdatas(&m.answers), vec!["www.example.test. A 192.0.2.10"]);
}

#[tokio::test]
async fn fault_delay_delays_reply() {
    let sim = Sim::start(hierarchy(43)).await;
    sim.server("ns1.example.test.").set_faults(Faults {
        delay_ms: 400,
        ..Faults::default()
    });
    let t0 = Instant::now();
    assert!(query_udp(ex(&sim), "www.example.test.", RecordType::A, 100)
        .await
        .is_none());
    let t0b = Instant::now();
    let m = query_udp(ex(&sim), "www.example.test.", RecordType::A, T)
        .await
        .unwrap();
    assert!(
        t0b.elapsed() >= Duration::from_millis(400),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(m.answers.len(), 1);
    let t1 = Instant::now();
    query_tcp(ex(&sim), "www.example.test.", RecordType::A, T)
        .await
        .unwrap();
    assert!(t1.elapsed() >= Duration::from_millis(400));
}

#[tokio::test]
async fn fault_wrong_id_replies_with_other_id() {
    let sim = Sim::start(hierarchy(44)).await;
    sim.server("ns1.example.test.").set_faults(Faults {
        wrong_id: true,
        ..Faults::default()
    });
    let q = make_query("www.example.test.", RecordType::A, false);
    let got = udp_collect(
        IpAddr::from([127, 0, 0, 1]),
        ex(&sim),
        &q.to_vec().unwrap(),
        400,
    )
    .await;
    assert_eq!(got.len(), 1, "only the forged reply");
    let m = Message::from_vec(&got[0].1).unwrap();
    assert_eq!(m.metadata.id, q.metadata.id.wrapping_add(1));
}

#[tokio::test]
async fn fault_wrong_id_also_correct_sends_real_reply_second() {
    let sim = Sim::start(hierarchy(45)).await;
    sim.server("ns1.example.test.").set_faults(Faults {
        wrong_id: true,
        also_correct: true,
        ..Faults::default()
    });
    let q = make_query("www.example.test.", RecordType::A, false);
    let got = udp_collect(
        IpAddr::from([127, 0, 0, 1]),
        ex(&sim),
        &q.to_vec().unwrap(),
        400,
    )
    .await;
    assert_eq!(got.len(), 2);
    let ids: Vec<u16> = got
        .iter()
        .map(|(_, b)| Message::from_vec(b).unwrap().metadata.id)
        .collect();
    assert_eq!(ids, vec![q.metadata.id.wrapping_add(1), q.metadata.id]);
    // Over TCP, both frames arrive on the connection in the same order.
    let mut s = tcp_connect(ex(&sim), T).await.unwrap();
    tcp_write_msg(&mut s, &q).await.unwrap();
    assert_eq!(
        tcp_read_msg(&mut s, T).await.unwrap().metadata.id,
        q.metadata.id.wrapping_add(1)
    );
    assert_eq!(
        tcp_read_msg(&mut s, T).await.unwrap().metadata.id,
        q.metadata.id
    );
}

#[tokio::test]
async fn fault_wrong_port_replies_from_other_port() {
    let sim = Sim::start(hierarchy(46)).await;
    sim.server("ns1.example.test.").set_faults(Faults {
        wrong_port: true,
        ..Faults::default()
    });
    let q = make_query("www.example.test.", RecordType::A, false);
    let got = udp_collect(
        IpAddr::from([127, 0, 0, 1]),
        ex(&sim),
        &q.to_vec().unwrap(),
        400,
    )
    .await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0.ip(), ex(&sim).ip());
    assert_ne!(got[0].0.port(), sim.port());
    assert_eq!(
        Message::from_vec(&got[0].1).unwrap().metadata.id,
        q.metadata.id
    );

    sim.server("ns1.example.test.").set_faults(Faults {
        wrong_port: true,
        also_correct: true,
        ..Faults::default()
    });
    let got = udp_collect(
        IpAddr::from([127, 0, 0, 1]),
        ex(&sim),
        &q.to_vec().unwrap(),
        400,
    )
    .await;
    assert_eq!(got.len(), 2);
    assert_ne!(got[0].0.port(), sim.port());
    assert_eq!(got[1].0, ex(&sim));
}

#[tokio::test]
async fn fault_tcp_close_drops_connection() {
    let sim = Sim::start(hierarchy(47)).await;
    sim.server("ns1.example.test.").set_faults(Faults {
        tcp_close: true,
        ..Faults::default()
    });
    let mut s = tcp_connect(ex(&sim), T).await.unwrap();
    let _ = tcp_write_msg(
        &mut s,
        &make_query("www.example.test.", RecordType::A, false),
    )
    .await;
    let mut buf = [0u8; 16];
    use tokio::io::AsyncReadExt;
    let r = tokio::time::timeout(Duration::from_millis(T), s.read(&mut buf)).await;
    match r {
        Ok(Ok(0)) | Ok(Err(_)) => {}
        other => panic!("expected EOF or reset, got {other:?}"),
    }
    // UDP is unaffected.
    assert!(query_udp(ex(&sim), "www.example.test.", RecordType::A, T)
        .await
        .is_some());
}

#[tokio::test]
async fn fault_formerr_on_edns() {
    let sim = Sim::start(hierarchy(48)).await;
    sim.server("ns1.example.test.").set_faults(Faults {
        formerr_on_edns: true,
        ..Faults::default()
    });
    let m = exchange_udp(
        ex(&sim),
        &make_query("www.example.test.", RecordType::A, true),
        T,
    )
    .await
    .unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
    assert!(m.edns.is_none());
    let m = query_udp(ex(&sim), "www.example.test.", RecordType::A, T)
        .await
        .unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(m.answers.len(), 1);
}

#[tokio::test]
async fn query_udp_from_uses_chosen_source() {
    let sim = Sim::start(hierarchy(49)).await;
    let m = query_udp_from(
        IpAddr::from([127, 49, 0, 200]),
        ex(&sim),
        "www.example.test.",
        RecordType::A,
        T,
    )
    .await
    .unwrap();
    assert_eq!(m.answers.len(), 1);
}

#[test]
fn zone_parse_errors_are_readable() {
    let err = Zone::parse("www IN A 1.2.3.4\n").unwrap_err();
    assert!(err.contains("$ORIGIN"), "{err}");
    let err = Zone::parse("$ORIGIN x.\n@ SOA a b 1 2 3 4 5\nfoo IN A not-an-ip\n").unwrap_err();
    assert!(err.contains("line 3"), "{err}");
    let z = Zone::parse("x. 60 SOA a b 1 2 3 4 5\nfoo.x. 60 TYPE65280 \\# 2 abcd\n");
    assert!(z.is_ok(), "{z:?}");
}

#[tokio::test]
async fn mutated_queries_never_panic_the_responder() {
    use rand::{Rng, SeedableRng};
    let sim = Sim::start(hierarchy(50)).await;
    let srv = sim.server("ns1.example.test.");
    let seed = make_query("a.b.dn.example.test.", RecordType::A, true)
        .to_vec()
        .unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for _ in 0..20_000 {
        let mut b = seed.clone();
        for _ in 0..rng.gen_range(1..6) {
            let i = rng.gen_range(0..b.len());
            b[i] = rng.gen();
        }
        b.truncate(rng.gen_range(0..=b.len()));
        let _ = srv.handle_bytes(&b, rng.gen());
    }
    // And over the wire the server is still alive.
    assert!(query_udp(ex(&sim), "www.example.test.", RecordType::A, T)
        .await
        .is_some());
}
