//! The answer cache stays within `max_size` while 200,000 distinct names
//! are resolved through the daemon. A file of its own: it loads the machine
//! for half a minute, which must not skew the timing of other cache tests
//! (test binaries run one after another).

mod support;

use hickory_proto::op::Message;
use hickory_proto::rr::RecordType;
use std::time::Duration;
use support::under_test::{config_for, root_zone, start};
use support::*;

#[tokio::test(flavor = "multi_thread")]
async fn cache_stays_under_max_size_while_200k_names_are_resolved() {
    let n = 161;
    let root = root_zone(n, &[("test", 2)]);
    let tld = format!("$ORIGIN test.\n@ SOA ns1 h 1 3600 600 86400 300\n@ NS ns1\nns1 A 127.{n}.0.2\n*.w 3600 A 192.0.2.1\n");
    let sim = Sim::start(vec![
        ServerSpec::new("a.root-servers.test.", &format!("127.{n}.0.1"), &[&root]).root(),
        ServerSpec::new("ns1.test.", &format!("127.{n}.0.2"), &[&tld]),
    ])
    .await;
    let mut cfg = config_for(&sim);
    let max: u64 = 4 << 20;
    cfg.cache.max_size = resolvd::config::ByteSize(max);
    let (d, addr) = start(&cfg).await;
    const NAMES: usize = 200_000;
    const WORKERS: usize = 64;
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for w in 0..WORKERS {
        tasks.push(tokio::spawn(async move {
            let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            sock.connect(addr).await.unwrap();
            let mut buf = vec![0u8; 1500];
            let mut answered = 0usize;
            for i in (w..NAMES).step_by(WORKERS) {
                let q = make_query(&format!("n{i}.w.test."), RecordType::A, false)
                    .to_vec()
                    .unwrap();
                sock.send(&q).await.unwrap();
                let got = tokio::time::timeout(Duration::from_secs(3), sock.recv(&mut buf)).await;
                if let Ok(Ok(len)) = got {
                    let m = Message::from_vec(&buf[..len]).unwrap();
                    answered += (m.answers.len() == 1) as usize;
                }
            }
            answered
        }));
    }
    let mut answered = 0;
    for t in tasks {
        answered += t.await.unwrap();
    }
    assert!(
        answered >= NAMES * 99 / 100,
        "{answered} of {NAMES} answered"
    );
    let (entries, bytes) = d.handler().cache.usage();
    assert!(
        bytes <= max,
        "answer cache holds {bytes} bytes, max_size {max}"
    );
    assert!(
        (entries as usize) < NAMES,
        "eviction happened: {entries} entries"
    );
    eprintln!(
        "200k names in {:?}: {entries} entries, {bytes} bytes",
        started.elapsed()
    );
}
