//! Two resolvd instances sharing one real Redis (`redis-server`, started
//! here on a free loopback port with a temporary directory and stopped by
//! PID): answers resolved by one are served by the other without upstream
//! queries, a dead Redis costs no more than the lookup timeout, and a
//! restarted one is used again. Addresses: 127.218.0.0/16 (hierarchy and
//! resolvd), 127.219.0.1 (Redis).

mod support;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use resolvd::cache_l2::RedisConfig;
use resolvd::config::{Config, Dur};
use resolvd::daemon::Daemon;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};
use support::under_test::{config_for, root_zone, start};
use support::*;

const REDIS_IP: &str = "127.219.0.1";

/// A redis-server we started; killed by PID when dropped.
struct Redis {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    /// Extra redis-server arguments (cluster mode).
    extra: Vec<String>,
}

impl Redis {
    /// Starts redis-server on a free port of [`REDIS_IP`].
    fn start() -> Redis {
        Redis::start_with(free_port(), Vec::new())
    }

    fn start_with(port: u16, extra: Vec<String>) -> Redis {
        let mut r = Redis {
            child: None,
            port,
            dir: tempfile::tempdir().expect("a temp dir for redis-server"),
            extra,
        };
        r.restart();
        r
    }

    /// A member of a Redis Cluster on a free port (its bus port, 10000
    /// above, free too), not yet joined.
    fn cluster_node() -> Redis {
        let port = loop {
            let p = free_port();
            if p < 55000 && std::net::TcpListener::bind((REDIS_IP, p + 10000)).is_ok() {
                break p;
            }
        };
        let dir = tempfile::tempdir().expect("a temp dir for redis-server");
        let nodes = dir.path().join("nodes.conf").display().to_string();
        let mut r = Redis {
            child: None,
            port,
            dir,
            extra: vec![
                "--cluster-enabled".into(),
                "yes".into(),
                "--cluster-config-file".into(),
                nodes,
                // The bus must come from the node's own address, or the
                // nodes do not recognise each other on 127.x addresses.
                "--bind-source-addr".into(),
                REDIS_IP.into(),
            ],
        };
        r.restart();
        r
    }

    /// (Re)starts it on the same port, with an empty database.
    fn restart(&mut self) {
        assert!(self.child.is_none(), "redis-server already running");
        let child = Command::new("redis-server")
            .args(["--bind", REDIS_IP, "--port", &self.port.to_string()])
            .arg("--dir")
            .arg(self.dir.path())
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args(["--protected-mode", "no", "--loglevel", "warning"])
            .args(&self.extra)
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run redis-server ({e}): install the Debian package redis-server (.ci/run does)")
            });
        self.child = Some(child);
        let until = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect((REDIS_IP, self.port)).is_err() {
            assert!(
                Instant::now() < until,
                "redis-server did not start listening"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills it (SIGKILL, by PID) and reaps it.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends `sig` to it (SIGSTOP: alive but silent, as a stalled server).
    fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            // SAFETY: kill(2) on the PID of a child we spawned and have not reaped.
            unsafe { libc::kill(c.id() as i32, sig) };
        }
    }

    fn url(&self) -> String {
        format!("redis://{REDIS_IP}:{}/0", self.port)
    }

    /// A direct connection, to look at or tamper with what is stored.
    async fn conn(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .expect("connects to redis-server")
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind((REDIS_IP, 0))
        .and_then(|l| l.local_addr())
        .expect("a free port for redis-server")
        .port()
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// root .1 → test. .2 → fleet.test. .3 (h0 … h199, TTL 300; `broken`
/// delegated to .4, which answers SERVFAIL).
fn world(n: u8) -> Vec<ServerSpec> {
    let root = root_zone(n, &[("test", 2)]);
    let tld = format!(
        "$ORIGIN test.
$TTL 86400
@ SOA ns1 hostmaster 1 3600 600 86400 300
@ NS ns1
ns1 A 127.{n}.0.2
fleet NS ns1.fleet
ns1.fleet A 127.{n}.0.3
broken NS ns1.broken
ns1.broken A 127.{n}.0.4
"
    );
    let mut fleet = format!(
        "$ORIGIN fleet.test.
$TTL 300
@ SOA ns1 hostmaster 1 3600 600 86400 120
@ NS ns1
ns1 A 127.{n}.0.3
"
    );
    for i in 0..200 {
        fleet.push_str(&format!("h{i} A 10.{}.{}.1\n", i / 100, i % 100));
    }
    let broken = "$ORIGIN broken.test.
$TTL 300
@ SOA ns1 hostmaster 1 3600 600 86400 120
@ NS ns1
www A 192.0.2.9
";
    let a = |h: u8| format!("127.{n}.0.{h}");
    vec![
        ServerSpec::new("a.root-servers.test", &a(1), &[&root]).root(),
        ServerSpec::new("ns1.test", &a(2), &[&tld]),
        ServerSpec::new("ns1.fleet.test", &a(3), &[&fleet]),
        ServerSpec::new("ns1.broken.test", &a(4), &[broken]),
    ]
}

fn expected(i: usize) -> String {
    format!("10.{}.{}.1", i / 100, i % 100)
}

/// A resolvd on 127.218.1.`host` sharing `redis`.
async fn instance(sim: &Sim, redis: &Redis, host: u8, prefix: &str) -> (Daemon, SocketAddr) {
    let mut cfg: Config = config_for(sim);
    cfg.server.listen = vec![format!("127.218.1.{host}:0").parse().unwrap()];
    cfg.cache.redis = Some(RedisConfig {
        url: redis.url(),
        key_prefix: prefix.into(),
        // Generous for a loaded debug build; the production default is 30 ms.
        timeout: Dur::millis(100),
        breaker_failures: 3,
        breaker_backoff: Dur::millis(300),
        ..RedisConfig::default()
    });
    start(&cfg).await
}

fn stat(d: &Daemon, key: &str) -> u64 {
    let text = d.handler().stats();
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in stats:\n{text}"))
}

fn upstream(d: &Daemon) -> u64 {
    d.handler().metrics.upstream_queries.load(Relaxed)
}

fn ttl(m: &Message) -> u32 {
    m.answers.first().map(|r| r.ttl).expect("an answer record")
}

/// Waits (bounded) until `cond` holds.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Asks `addr` for h`i`.fleet.test. and checks the address; returns the
/// reply and how long it took.
async fn ask_h(addr: SocketAddr, i: usize) -> (Message, Duration) {
    let t = Instant::now();
    let r = ask(addr, &format!("h{i}.fleet.test."), RecordType::A).await;
    let took = t.elapsed();
    assert_eq!(
        r.metadata.response_code,
        ResponseCode::NoError,
        "h{i} via {addr}"
    );
    assert_eq!(addrs(&r), vec![expected(i)], "h{i} via {addr}");
    (r, took)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_instance_answers_from_redis_and_both_survive_its_outage() {
    let sim = Sim::start(world(218)).await;
    let mut redis = Redis::start();
    let (a, a_addr) = instance(&sim, &redis, 1, "fleet1:").await;
    let (b, b_addr) = instance(&sim, &redis, 2, "fleet1:").await;

    // A resolves 100 names; each is written to Redis in the background.
    let mut a_ttls = Vec::new();
    for i in 0..100 {
        a_ttls.push(ttl(&ask_h(a_addr, i).await.0));
    }
    eventually("A's 100 writes", || stat(&a, "l2_writes") >= 100).await;
    // Let the entries age past a second, so B must show aged TTLs.
    tokio::time::sleep(Duration::from_millis(1100)).await;

    // B answers all 100 from Redis: no upstream query, TTLs below A's.
    for (i, a_ttl) in a_ttls.iter().enumerate() {
        let (r, _) = ask_h(b_addr, i).await;
        assert!(ttl(&r) < *a_ttl, "h{i}: B's TTL {} vs A's {a_ttl}", ttl(&r));
    }
    assert_eq!(upstream(&b), 0, "B sent no upstream query");
    assert_eq!(stat(&b, "l2_hits"), 100);
    // Now in B's own cache: asked again, Redis is not consulted.
    ask_h(b_addr, 7).await;
    assert_eq!(stat(&b, "l2_hits"), 100);

    // Redis dies: both keep answering new names, each within the
    // resolution time plus at most the lookup timeout.
    redis.kill();
    let mut slowest = Duration::ZERO;
    for i in 100..130 {
        let addr = if i % 2 == 0 { a_addr } else { b_addr };
        slowest = slowest.max(ask_h(addr, i).await.1);
    }
    for i in 0..20 {
        ask_h(a_addr, i).await; // cached names stay fast too
    }
    assert!(
        slowest < Duration::from_millis(600),
        "slowest answer with Redis down took {slowest:?}"
    );
    for d in [&a, &b] {
        assert!(stat(d, "l2_errors") >= 1, "{}", d.handler().stats());
        assert!(
            stat(d, "l2_skipped") >= 1,
            "the breaker opened: {}",
            d.handler().stats()
        );
    }

    // Redis is back (empty): after the breaker's backoff both use it again.
    redis.restart();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let written = stat(&a, "l2_writes");
    let mut next = 130;
    eventually_async_writes(a_addr, &a, written, &mut next).await;
    let first = next;
    let before = stat(&a, "l2_writes");
    for i in first..first + 10 {
        ask_h(a_addr, i).await;
    }
    let until = Instant::now() + Duration::from_secs(10);
    while stat(&a, "l2_writes") < before + 10 {
        assert!(
            Instant::now() < until,
            "A's writes after the restart ({before} before):\n{}",
            a.handler().stats()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let b_upstream = upstream(&b);
    let b_hits = stat(&b, "l2_hits");
    // B's breaker may still be open from the outage; give it its backoff.
    tokio::time::sleep(Duration::from_millis(400)).await;
    for i in first..first + 10 {
        ask_h(b_addr, i).await;
    }
    assert_eq!(upstream(&b), b_upstream, "B answered from Redis again");
    assert_eq!(stat(&b, "l2_hits"), b_hits + 10);
}

/// Resolves fresh names on A until one of its writes reaches Redis (its
/// breaker may need a probe or two after the restart); bounded.
async fn eventually_async_writes(addr: SocketAddr, a: &Daemon, written: u64, next: &mut usize) {
    for _ in 0..40 {
        ask_h(addr, *next).await;
        *next += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
        if stat(a, "l2_writes") > written {
            return;
        }
    }
    panic!(
        "A never wrote to the restarted Redis:\n{}",
        a.handler().stats()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_data_in_redis_is_ignored_and_counted() {
    let sim = Sim::start(world(218)).await;
    let redis = Redis::start();
    let (b, b_addr) = instance(&sim, &redis, 3, "fleet2:").await;
    let mut c = redis.conn().await;
    let good_header = |version: u8| {
        let mut v = vec![version, 0, 0, 0];
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        v.extend_from_slice(&(now + 300_000).to_be_bytes());
        v.extend_from_slice(&now.to_be_bytes());
        v
    };
    // A wrong version, a truncated entry, and a well-formed answer to
    // another question stored under h152's key.
    let mut other = good_header(1);
    let msg = [
        &[0, 0, 0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0][..],
        b"\x04h999\x05fleet\x04test\x00\x00\x01\x00\x01",
    ]
    .concat();
    other.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    other.extend_from_slice(&msg);
    let values: [(usize, Vec<u8>); 3] = [
        (150, [good_header(9), vec![0; 40]].concat()),
        (151, good_header(1)[..10].to_vec()),
        (152, other),
    ];
    for (i, v) in &values {
        let key = format!("fleet2:v1:h{i}.fleet.test./1");
        let _: () = redis::cmd("SET")
            .arg(&key)
            .arg(v)
            .query_async(&mut c)
            .await
            .unwrap();
    }
    for (i, _) in &values {
        ask_h(b_addr, *i).await;
    }
    assert_eq!(stat(&b, "l2_bad"), 3, "{}", b.handler().stats());
    assert_eq!(stat(&b, "l2_hits"), 0);
    assert!(upstream(&b) > 0, "resolved instead");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_not_shared() {
    let sim = Sim::start(world(218)).await;
    sim.server("127.218.0.4").set_faults(Faults {
        rcode: Some(ResponseCode::ServFail),
        ..Faults::default()
    });
    let redis = Redis::start();
    let (a, a_addr) = instance(&sim, &redis, 4, "fleet3:").await;
    let r = ask(a_addr, "www.broken.test.", RecordType::A).await;
    assert_eq!(r.metadata.response_code, ResponseCode::ServFail);
    ask_h(a_addr, 160).await;
    eventually("the good answer's write", || stat(&a, "l2_writes") >= 1).await;
    let mut c = redis.conn().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("fleet3:*")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(keys, vec!["fleet3:v1:h160.fleet.test./1".to_string()]);
    let ttl: i64 = redis::cmd("TTL")
        .arg(&keys[0])
        .query_async(&mut c)
        .await
        .unwrap();
    // 300 s of TTL plus the default one-day serve-stale window.
    assert!((86_000..=86_700).contains(&ttl), "Redis TTL {ttl}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_redis_costs_at_most_the_lookup_timeout() {
    let sim = Sim::start(world(218)).await;
    let redis = Redis::start();
    let (a, a_addr) = instance(&sim, &redis, 5, "fleet4:").await;
    ask_h(a_addr, 170).await;
    // Stalled: connections stay open, nothing is answered.
    redis.signal(libc::SIGSTOP);
    let mut slowest = Duration::ZERO;
    for i in 171..181 {
        slowest = slowest.max(ask_h(a_addr, i).await.1);
    }
    redis.signal(libc::SIGCONT);
    // 100 ms of lookup timeout, the rest is resolution on a loaded machine.
    assert!(slowest < Duration::from_millis(500), "slowest {slowest:?}");
    assert!(stat(&a, "l2_errors") >= 3, "{}", a.handler().stats());
    assert!(
        stat(&a, "l2_skipped") >= 1,
        "the breaker opened after 3 timeouts: {}",
        a.handler().stats()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_flush_empties_the_shared_cache_too() {
    let sim = Sim::start(world(218)).await;
    let redis = Redis::start();
    let (a, a_addr) = instance(&sim, &redis, 6, "fleet5:").await;
    for i in 190..194 {
        ask_h(a_addr, i).await;
    }
    eventually("A's writes", || stat(&a, "l2_writes") >= 4).await;
    let mut c = redis.conn().await;
    let keys = || {
        let mut c = c.clone();
        async move {
            let mut k: Vec<String> = redis::cmd("KEYS")
                .arg("fleet5:*")
                .query_async(&mut c)
                .await
                .unwrap();
            k.sort();
            k
        }
    };
    assert_eq!(keys().await.len(), 4);

    let reply = resolvd::control::execute_async(a.handler(), "flush h190.fleet.test.").await;
    assert!(reply.contains("ok removed 1 shared"), "{reply}");
    assert_eq!(
        keys().await,
        vec![
            "fleet5:v1:h191.fleet.test./1",
            "fleet5:v1:h192.fleet.test./1",
            "fleet5:v1:h193.fleet.test./1"
        ]
    );
    let reply = resolvd::control::execute_async(a.handler(), "flush fleet.test. subtree").await;
    assert!(reply.contains("ok removed 3 shared"), "{reply}");
    assert!(keys().await.is_empty());
    let _: () = redis::cmd("PING").query_async(&mut c).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_cluster_is_shared_too() {
    let sim = Sim::start(world(218)).await;
    let nodes: Vec<Redis> = (0..3).map(|_| Redis::cluster_node()).collect();
    let addrs: Vec<String> = nodes
        .iter()
        .map(|n| format!("{REDIS_IP}:{}", n.port))
        .collect();
    let created = Command::new("redis-cli")
        .arg("--cluster")
        .arg("create")
        .args(&addrs)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("redis-cli runs (Debian package redis-tools, pulled in by redis-server)");
    assert!(created.success(), "redis-cli --cluster create failed");
    // Every node must agree the cluster is up: a write routed to a node
    // that has not caught up yet gets CLUSTERDOWN, and the test writes
    // each name once.
    let until = Instant::now() + Duration::from_secs(15);
    for n in &nodes {
        let mut c = n.conn().await;
        loop {
            let info: String = redis::cmd("CLUSTER")
                .arg("INFO")
                .query_async(&mut c)
                .await
                .unwrap();
            if info.contains("cluster_state:ok") {
                break;
            }
            assert!(
                Instant::now() < until,
                "the cluster never became ok on port {}:\n{info}",
                n.port
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    let cluster_cfg = |host: u8| {
        let mut cfg: Config = config_for(&sim);
        cfg.server.listen = vec![format!("127.218.1.{host}:0").parse().unwrap()];
        cfg.cache.redis = Some(RedisConfig {
            cluster: addrs.iter().map(|a| format!("redis://{a}")).collect(),
            key_prefix: "fleet6:".into(),
            // Generous: the first lookup also maps the cluster's slots,
            // and under a loaded CI run a 500 ms budget was overrun.
            timeout: Dur::millis(2000),
            ..RedisConfig::default()
        });
        cfg
    };
    let (a, a_addr) = start(&cluster_cfg(7)).await;
    let (b, b_addr) = start(&cluster_cfg(8)).await;
    // All at once, so the writer finds several answers queued and sends
    // them together: their keys hash to different slots, which one
    // cluster pipeline cannot carry (CROSSSLOT).
    let asks: Vec<_> = (0..30)
        .map(|i| tokio::spawn(async move { ask_h(a_addr, i).await }))
        .collect();
    for a in asks {
        a.await.unwrap();
    }
    let until = Instant::now() + Duration::from_secs(10);
    while stat(&a, "l2_writes") < 30 {
        assert!(
            Instant::now() < until,
            "A's 30 writes did not all reach the cluster: {}",
            a.handler().stats()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for i in 0..30 {
        ask_h(b_addr, i).await;
    }
    assert_eq!(
        upstream(&b),
        0,
        "B answered from the cluster: {}",
        b.handler().stats()
    );
    assert_eq!(stat(&b, "l2_hits"), 30);
    // The keys really are spread over the nodes.
    let mut holding = 0;
    for n in &nodes {
        let mut c = n.conn().await;
        let size: u64 = redis::cmd("DBSIZE").query_async(&mut c).await.unwrap();
        holding += usize::from(size > 0);
    }
    assert!(holding >= 2, "keys on {holding} of 3 nodes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_with_a_private_ca_is_shared_and_a_wrong_ca_is_refused() {
    let sim = Sim::start(world(218)).await;
    // A CA, a server certificate for the Redis address, and a second CA
    // that signed nothing.
    let pki = tempfile::tempdir().unwrap();
    let (ca, ca_key) = pki::ca("fleet test CA");
    let (other_ca, _) = pki::ca("another CA");
    let (leaf, leaf_key) = pki::leaf(&[REDIS_IP], &ca, &ca_key);
    let file = |name: &str, text: String| {
        let p = pki.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let ca_pem = file("ca.pem", ca.pem());
    let other_pem = file("other.pem", other_ca.pem());
    let cert_pem = file("cert.pem", leaf.pem());
    let key_pem = file("key.pem", leaf_key.serialize_pem());
    let port = free_port();
    let s = |p: &std::path::Path| p.display().to_string();
    let _redis = Redis::start_with(
        port,
        vec![
            "--port".into(),
            "0".into(),
            "--tls-port".into(),
            port.to_string(),
            "--tls-cert-file".into(),
            s(&cert_pem),
            "--tls-key-file".into(),
            s(&key_pem),
            "--tls-ca-cert-file".into(),
            s(&ca_pem),
            "--tls-auth-clients".into(),
            "no".into(),
        ],
    );
    let tls_cfg = |host: u8, ca: &std::path::Path| {
        let mut cfg: Config = config_for(&sim);
        cfg.server.listen = vec![format!("127.218.1.{host}:0").parse().unwrap()];
        cfg.cache.redis = Some(RedisConfig {
            url: format!("rediss://{REDIS_IP}:{port}/0"),
            ca: Some(ca.to_path_buf()),
            key_prefix: "fleet7:".into(),
            // The first lookup includes the TLS handshake (debug build).
            timeout: Dur::millis(500),
            ..RedisConfig::default()
        });
        cfg
    };
    let (a, a_addr) = start(&tls_cfg(9, &ca_pem)).await;
    let (b, b_addr) = start(&tls_cfg(10, &ca_pem)).await;
    let (c, c_addr) = start(&tls_cfg(11, &other_pem)).await;
    for i in 0..10 {
        ask_h(a_addr, i).await;
    }
    eventually("A's writes over TLS", || stat(&a, "l2_writes") >= 10).await;
    for i in 0..10 {
        ask_h(b_addr, i).await;
        ask_h(c_addr, i).await;
    }
    assert_eq!(upstream(&b), 0, "B read A's answers over TLS");
    assert_eq!(stat(&b, "l2_hits"), 10);
    // C does not trust the server's certificate: no L2, still answers.
    assert_eq!(stat(&c, "l2_hits"), 0);
    assert!(stat(&c, "l2_errors") >= 1, "{}", c.handler().stats());
    assert!(upstream(&c) > 0);
}
