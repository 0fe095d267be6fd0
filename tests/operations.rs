//! Operating resolvd: the Prometheus endpoint, systemd notifications,
//! dnstap, logs, warm restart, the control commands for pools and servers.
//! Each test uses its own 127.2NN.0.0/24 block (200 ≤ NN ≤ 209).

mod support;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;
use support::under_test::{config_for, start};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// root .1 → test. .2 → example.test. (.3 and .6)
fn world(n: u8) -> Vec<ServerSpec> {
    world_in(&format!("127.{n}.0"))
}

/// [`world`] on `PREFIX.1`, `.2`, `.3` and `.6`.
fn world_in(p: &str) -> Vec<ServerSpec> {
    let root = format!(
        "$ORIGIN .
$TTL 86400
@ SOA a.root-servers.test. hostmaster.test. 1 3600 600 86400 300
@ NS a.root-servers.test.
a.root-servers.test. A {p}.1
test. NS ns1.test.
ns1.test. A {p}.2
"
    );
    let tld = format!(
        "$ORIGIN test.
$TTL 86400
@ SOA ns1 hostmaster 1 3600 600 86400 300
@ NS ns1
ns1 A {p}.2
example NS ns1.example
example NS ns2.example
ns1.example A {p}.3
ns2.example A {p}.6
"
    );
    let example = format!(
        "$ORIGIN example.test.
$TTL 300
@ SOA ns1 hostmaster 1 3600 600 86400 120
@ NS ns1
@ NS ns2
ns1 A {p}.3
ns2 A {p}.6
www A 192.0.2.10
www AAAA 2001:db8::10
mail A 192.0.2.25
short 1 A 192.0.2.99
"
    );
    vec![
        ServerSpec::new("a.root-servers.test.", &format!("{p}.1"), &[&root]).root(),
        ServerSpec::new("ns1.test.", &format!("{p}.2"), &[&tld]),
        ServerSpec::new("ns1.example.test.", &format!("{p}.3"), &[&example]),
        ServerSpec::new("ns2.example.test.", &format!("{p}.6"), &[&example]),
    ]
}

/// `GET path` over HTTP/1.1; returns (status line, body).
async fn http_get(addr: SocketAddr, path: &str) -> (String, String) {
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .expect("send request");
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.expect("read reply");
        String::from_utf8(buf).expect("utf-8 reply")
    };
    let text = tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .expect("HTTP reply within 5 s");
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    )
}

/// Scrapes `/metrics` into `series{labels}` → value.
async fn scrape(addr: SocketAddr) -> HashMap<String, f64> {
    let (status, body) = http_get(addr, "/metrics").await;
    assert!(status.contains("200"), "scrape status {status:?}");
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').expect("sample line has a value");
            (k.to_string(), v.parse::<f64>().expect("numeric sample"))
        })
        .collect()
}

fn get(m: &HashMap<String, f64>, k: &str) -> f64 {
    *m.get(k)
        .unwrap_or_else(|| panic!("series {k} missing; have {:?}", m.keys()))
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_endpoint_counts_queries_by_transport_type_and_rcode() {
    let sim = Sim::start(world(200)).await;
    let mut cfg = config_for(&sim);
    cfg.metrics.listen = Some("127.0.0.1:0".parse().unwrap());
    let (d, addr) = start(&cfg).await;
    let maddr = d.metrics_addr().expect("metrics endpoint bound");

    let before = scrape(maddr).await;
    // Miss, hit, another miss (AAAA), a TCP miss and an NXDOMAIN miss.
    let r = ask(addr, "www.example.test.", RecordType::A).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    ask(addr, "www.example.test.", RecordType::A).await;
    ask(addr, "www.example.test.", RecordType::AAAA).await;
    let r = query_tcp(addr, "mail.example.test.", RecordType::A, 6000)
        .await
        .expect("TCP reply");
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    let r = ask(addr, "nope.example.test.", RecordType::TXT).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    let after = scrape(maddr).await;

    let delta = |k: &str| get(&after, k) - get(&before, k);
    assert_eq!(delta(r#"resolvd_queries_total{transport="udp"}"#), 4.0);
    assert_eq!(delta(r#"resolvd_queries_total{transport="tcp"}"#), 1.0);
    assert_eq!(delta(r#"resolvd_queries_by_type_total{type="A"}"#), 3.0);
    assert_eq!(delta(r#"resolvd_queries_by_type_total{type="AAAA"}"#), 1.0);
    assert_eq!(delta(r#"resolvd_queries_by_type_total{type="TXT"}"#), 1.0);
    assert_eq!(delta(r#"resolvd_responses_total{rcode="NOERROR"}"#), 4.0);
    assert_eq!(delta(r#"resolvd_responses_total{rcode="NXDOMAIN"}"#), 1.0);
    assert_eq!(delta("resolvd_cache_hits_total"), 1.0);
    assert_eq!(delta("resolvd_cache_misses_total"), 4.0);
    // Every miss is timed, and nothing else.
    assert_eq!(delta("resolvd_resolution_duration_seconds_count"), 4.0);
    assert_eq!(
        get(
            &after,
            r#"resolvd_resolution_duration_seconds_bucket{le="+Inf"}"#
        ),
        get(&after, "resolvd_resolution_duration_seconds_count")
    );
    assert!(delta("resolvd_resolution_duration_seconds_sum") > 0.0);
    let upstream = delta("resolvd_upstream_queries_total");
    assert!(upstream >= 4.0, "upstream queries {upstream}");
    assert_eq!(
        delta(r#"resolvd_upstream_outcomes_total{outcome="answered"}"#),
        upstream,
        "every upstream query to the healthy hierarchy is answered"
    );
    assert_eq!(sim.total_queries() as f64, upstream);
    assert!(get(&after, "resolvd_cache_entries") >= 4.0);
    assert!(get(&after, "resolvd_cache_size_bytes") > 0.0);
    assert_eq!(
        get(
            &after,
            &format!(
                r#"resolvd_build_info{{version="{}"}}"#,
                env!("CARGO_PKG_VERSION")
            )
        ),
        1.0,
        "build info"
    );
    assert!(get(&after, "resolvd_process_start_time_seconds") > 1.7e9);
    // Validation is off in this configuration: nothing is counted.
    assert_eq!(
        delta(r#"resolvd_dnssec_answers_total{state="insecure"}"#),
        0.0
    );

    let (status, _) = http_get(maddr, "/other").await;
    assert!(status.contains("404"), "{status}");
    d.shutdown().await;
}

const BIN: &str = env!("CARGO_BIN_EXE_resolvd");

/// Kills the resolvd process it holds (by PID) when dropped, even when the
/// test fails.
struct Process(std::process::Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Process {
    fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on the PID of a child we spawned and still own.
        unsafe { libc::kill(self.0.id() as i32, sig) };
    }
}

/// Starts the resolvd binary on `config` with `envs` set, its stderr read
/// line by line into the returned channel (by a thread of its own, so a
/// wait on the channel can time out).
fn spawn_resolvd(
    config: &std::path::Path,
    envs: &[(&str, &std::path::Path)],
) -> (Process, std::sync::mpsc::Receiver<String>) {
    use std::io::BufRead;
    let mut cmd = std::process::Command::new(BIN);
    cmd.arg("--config")
        .arg(config)
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut p = Process(cmd.spawn().expect("spawn resolvd"));
    let stderr = p.0.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (p, rx)
}

/// Lines from `rx` up to and including the first containing `needle`;
/// stops early when `wait` passes with no line. Whether it was seen.
fn lines_until(
    rx: &std::sync::mpsc::Receiver<String>,
    needle: &str,
    wait: Duration,
) -> (Vec<String>, bool) {
    let mut lines = Vec::new();
    while let Ok(l) = rx.recv_timeout(wait) {
        let done = l.contains(needle);
        lines.push(l);
        if done {
            return (lines, true);
        }
    }
    (lines, false)
}

/// A UDP port free at the time of asking on `ip`.
fn free_port(ip: &str) -> u16 {
    std::net::UdpSocket::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The next sd_notify datagram, within 10 s.
fn next_notification(sock: &std::os::unix::net::UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let n = sock
        .recv(&mut buf)
        .expect("a notification from resolvd within 10 s");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn systemd_is_notified_ready_reloading_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let notify_path = dir.path().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let port = free_port("127.201.0.1");
    let cfg = dir.path().join("resolvd.toml");
    std::fs::write(
        &cfg,
        format!("[server]\nlisten = [\"127.201.0.1:{port}\"]\n[control]\nenabled = false\n"),
    )
    .unwrap();
    let p = Process(
        std::process::Command::new(BIN)
            .arg("--config")
            .arg(&cfg)
            .env("NOTIFY_SOCKET", &notify_path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn resolvd"),
    );
    let ready = next_notification(&sock);
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");
    // READY means bound: the very first query is answered.
    let addr: SocketAddr = format!("127.201.0.1:{port}").parse().unwrap();
    let r = query_udp(addr, "ready.invalid.", RecordType::A, 2000)
        .await
        .expect("answered right after READY=1");
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);

    p.signal(libc::SIGHUP);
    let reloading = next_notification(&sock);
    assert!(
        reloading.lines().any(|l| l == "RELOADING=1"),
        "{reloading:?}"
    );
    assert!(
        reloading.lines().any(|l| l.starts_with("MONOTONIC_USEC=")),
        "{reloading:?}"
    );
    let ready = next_notification(&sock);
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");

    p.signal(libc::SIGTERM);
    let stopping = next_notification(&sock);
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping:?}");
}

#[test]
fn systemd_unit_passes_systemd_analyze_verify() {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/contrib/resolvd.service"
    ))
    .unwrap();
    for key in [
        "Type=notify",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "DynamicUser=yes",
        "RuntimeDirectory=resolvd",
        "StateDirectory=resolvd",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
    ] {
        assert!(unit.lines().any(|l| l == key), "unit lacks {key}");
    }
    // verify checks that ExecStart's binary exists: point it at the one
    // just built instead of /usr/local/bin, and change nothing else.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("resolvd.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/resolvd", BIN)).unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze is missing: install Debian package systemd");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Starts `fstrm_capture` reading dnstap on `sock`, writing to `out`.
fn fstrm_capture(sock: &std::path::Path, out: &std::path::Path) -> Process {
    let _ = std::fs::remove_file(sock);
    let p = Process(
        std::process::Command::new("fstrm_capture")
            .args(["-t", "protobuf:dnstap.Dnstap", "-u"])
            .arg(sock)
            .arg("-w")
            .arg(out)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("fstrm_capture is missing: install Debian package fstrm-bin"),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !sock.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "fstrm_capture did not create {}",
            sock.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    p
}

/// Stops a capture (SIGTERM makes it close its file cleanly) and returns
/// what `dnstap-ldns -q` reads back from the file.
fn stop_and_read(p: Process, file: &std::path::Path) -> String {
    let mut p = p;
    p.signal(libc::SIGTERM);
    let _ = p.0.wait();
    let out = std::process::Command::new("dnstap-ldns")
        .arg("-q")
        .arg("-r")
        .arg(file)
        .output()
        .expect("dnstap-ldns is missing: install Debian package dnstap-ldns");
    assert!(out.status.success(), "dnstap-ldns failed: {:?}", out);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The writer connects within its reconnect interval and drops messages
/// until then: asks fresh names under `zone` (up to 5 s) until one of its
/// messages has been delivered.
async fn until_dnstap_delivers(m: &resolvd::metrics::Metrics, addr: SocketAddr, zone: &str) {
    use std::sync::atomic::Ordering::Relaxed;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut i = 0;
    while m.dnstap_sent.load(Relaxed) == 0 {
        assert!(std::time::Instant::now() < deadline, "nothing delivered");
        query_udp(addr, &format!("warm{i}.{zone}"), RecordType::A, 2000).await;
        i += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (up to 3 s) until the dnstap writer's sent count has not moved for
/// 100 ms, then 100 ms more for the reader to take in what was written.
async fn until_dnstap_settles(m: &resolvd::metrics::Metrics) {
    use std::sync::atomic::Ordering::Relaxed;
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    let mut last = m.dnstap_sent.load(Relaxed);
    let mut still = 0;
    while still < 5 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = m.dnstap_sent.load(Relaxed);
        still = if now == last { still + 1 } else { 0 };
        last = now;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// Asks names until the dnstap writer has delivered more than `above`
/// messages (it connects to a new reader within its reconnect interval).
async fn until_dnstap_flows(addr: SocketAddr, m: &resolvd::metrics::Metrics, above: u64) {
    use std::sync::atomic::Ordering::Relaxed;
    for i in 0..100 {
        query_udp(
            addr,
            &format!("probe{i}.example.test."),
            RecordType::A,
            2000,
        )
        .await;
        if m.dnstap_sent.load(Relaxed) > above {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("dnstap writer never delivered to the reader");
}

#[tokio::test(flavor = "multi_thread")]
async fn dnstap_reaches_fstrm_capture_and_survives_a_reader_restart() {
    use std::sync::atomic::Ordering::Relaxed;
    let sim = Sim::start(world(202)).await;
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("dnstap.sock");
    let mut cfg = config_for(&sim);
    cfg.dnstap.socket = Some(sock.clone());
    cfg.dnstap.identity = "ops-test".into();
    cfg.dnstap.reconnect_interval = resolvd::config::Dur::millis(100);
    let (d, addr) = start(&cfg).await;
    let m = d.handler().metrics.clone();

    // No reader yet: answering goes on, the messages are dropped and counted.
    ask(addr, "early.example.test.", RecordType::A).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while m.dnstap_dropped.load(Relaxed) < 2 {
        assert!(std::time::Instant::now() < deadline, "drops not counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let first = dir.path().join("first.fstrm");
    let cap = fstrm_capture(&sock, &first);
    until_dnstap_flows(addr, &m, 0).await;
    let r = ask(addr, "www.example.test.", RecordType::A).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    ask(addr, "www.example.test.", RecordType::A).await; // a cache hit
    ask(addr, "missing.example.test.", RecordType::AAAA).await;
    // Restart the reader: the writer notices and connects to the new one.
    // The replies above may reach us before the writer has written their
    // messages (and the reader read them): let it catch up first.
    until_dnstap_settles(&m).await;
    let sent = m.dnstap_sent.load(Relaxed);
    let text = stop_and_read(cap, &first);
    let second = dir.path().join("second.fstrm");
    let cap = fstrm_capture(&sock, &second);
    until_dnstap_flows(addr, &m, sent).await;
    ask(addr, "mail.example.test.", RecordType::A).await;
    // Shutdown sends STOP and waits for FINISH, so the capture is complete.
    d.shutdown().await;
    let text2 = stop_and_read(cap, &second);

    let lines = |t: &str, kind: &str, name: &str| {
        t.lines()
            .filter(|l| l.contains(&format!(" {kind} ")) && l.contains(name))
            .count()
    };
    // Two queries for www (a miss and a hit), each with its response.
    assert_eq!(lines(&text, "CQ", "www.example.test."), 2, "{text}");
    assert_eq!(lines(&text, "CR", "www.example.test."), 2, "{text}");
    assert_eq!(lines(&text, "CQ", "missing.example.test."), 1, "{text}");
    assert_eq!(lines(&text, "CR", "missing.example.test."), 1, "{text}");
    assert!(text.contains("127.0.0.1"), "client address logged: {text}");
    assert!(!text.contains("early.example.test."), "{text}");
    assert_eq!(lines(&text2, "CQ", "mail.example.test."), 1, "{text2}");
    assert_eq!(lines(&text2, "CR", "mail.example.test."), 1, "{text2}");
    assert!(!text2.contains("www.example.test."), "{text2}");
}

/// Runs resolvd with `config` until it logs its startup summary; returns
/// the lines logged up to and including it.
fn startup_lines(config: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("resolvd.toml");
    std::fs::write(&path, config).unwrap();
    let (_p, rx) = spawn_resolvd(&path, &[]);
    let (lines, started) = lines_until(&rx, "resolvd started", Duration::from_secs(10));
    assert!(started, "no startup summary; stderr: {lines:?}");
    lines
}

#[test]
fn json_logs_are_one_object_per_line_with_a_startup_summary() {
    let port = free_port("127.203.0.1");
    let lines = startup_lines(&format!(
        "[server]\nlisten = [\"127.203.0.1:{port}\"]\n[control]\nenabled = false\n\
         [cache]\nmax_size = \"64MiB\"\n[log]\nformat = \"json\"\n"
    ));
    for l in &lines {
        let v: serde_json::Value =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        assert!(
            v.get("level").is_some() && v.get("timestamp").is_some(),
            "{l}"
        );
    }
    let summary: serde_json::Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    assert_eq!(summary["message"], "resolvd started");
    assert_eq!(summary["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(summary["listen"], format!("127.203.0.1:{port}"));
    assert_eq!(summary["cache_max_bytes"], 64 << 20);
    assert_eq!(summary["zones"], 0);
    assert_eq!(summary["dnssec"], "validating");
}

/// The scheduling policy of every thread of process `pid`, by thread name.
fn thread_policies(pid: u32) -> Vec<(String, i32)> {
    let mut out = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let tid: i32 = t.file_name().to_string_lossy().parse().unwrap();
        let name = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if let Ok(p) = resolvd::sched::policy(tid) {
            out.push((name.trim().to_string(), p));
        }
    }
    out
}

#[test]
fn every_thread_runs_under_sched_batch_unless_turned_off() {
    for (ip, batch, want) in [
        ("127.203.0.3", None, libc::SCHED_BATCH),
        ("127.203.0.4", Some(false), libc::SCHED_OTHER),
    ] {
        let port = free_port(ip);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("resolvd.toml");
        let line = batch
            .map(|b| format!("batch_scheduling = {b}\n"))
            .unwrap_or_default();
        std::fs::write(
            &path,
            format!("[server]\nlisten = [\"{ip}:{port}\"]\nthreads = 2\n{line}[control]\nenabled = false\n"),
        )
        .unwrap();
        let (p, rx) = spawn_resolvd(&path, &[]);
        let (lines, started) = lines_until(&rx, "resolvd started", Duration::from_secs(10));
        assert!(started, "no startup summary; stderr: {lines:?}");
        // The main thread, two workers and a UDP listener thread per
        // socket; the listener threads start just after the summary.
        let mut threads = thread_policies(p.0.id());
        for _ in 0..50 {
            if threads.iter().filter(|(n, _)| n == "resolvd-udp").count() == 2 {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
            threads = thread_policies(p.0.id());
        }
        assert!(
            threads.iter().filter(|(n, _)| n == "resolvd-udp").count() == 2 && threads.len() >= 5,
            "{threads:?}"
        );
        assert!(threads.iter().all(|(_, p)| *p == want), "{threads:?}");
    }
}

#[test]
fn text_logs_carry_the_startup_summary_on_one_line() {
    let port = free_port("127.203.0.2");
    let lines = startup_lines(&format!(
        "[server]\nlisten = [\"127.203.0.2:{port}\"]\n[control]\nenabled = false\n"
    ));
    let last = lines.last().unwrap();
    assert!(serde_json::from_str::<serde_json::Value>(last).is_err());
    assert!(
        last.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION")))
            && last.contains(&format!("listen=127.203.0.2:{port}")),
        "{last}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_persisted_cache_answers_after_restart_without_upstream_queries() {
    let sim = Sim::start(world(204)).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config_for(&sim);
    cfg.cache.persist = Some(dir.path().join("cache.bin"));
    let (d, addr) = start(&cfg).await;
    let asked = [
        ("www.example.test.", RecordType::A),
        ("www.example.test.", RecordType::AAAA),
        ("mail.example.test.", RecordType::A),
        ("nope.example.test.", RecordType::A),
    ];
    let mut first = Vec::new();
    for (n, t) in asked {
        first.push(ask(addr, n, t).await);
    }
    // Shutdown dumps the cache to [cache] persist.
    d.shutdown().await;
    assert!(dir.path().join("cache.bin").exists());

    sim.clear_queries();
    let (d, addr) = start(&cfg).await;
    for ((n, t), before) in asked.iter().zip(&first) {
        let r = ask(addr, n, *t).await;
        assert_eq!(
            r.metadata.response_code, before.metadata.response_code,
            "{n} {t}"
        );
        assert_eq!(addrs(&r), addrs(before), "{n} {t}");
        for rec in r.answers {
            assert!(rec.ttl <= 300 && rec.ttl >= 295, "TTL kept: {rec}");
        }
    }
    assert_eq!(sim.total_queries(), 0, "answered from the loaded cache");
    assert_eq!(d.handler().metrics.query_counts().hits, asked.len() as u64);
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn dump_and_load_cache_commands_skip_expired_and_reject_corrupt_files() {
    use resolvd::control::execute;
    let sim = Sim::start(world(205)).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_for(&sim);
    let (d, addr) = start(&cfg).await;
    ask(addr, "www.example.test.", RecordType::A).await;
    ask(addr, "short.example.test.", RecordType::A).await;
    // A space in the path: the control protocol keeps it whole.
    let file = dir.path().join("cache dump.bin");
    let reply = execute(d.handler(), &format!("dump-cache {}", file.display()));
    assert!(reply.starts_with("ok dumped"), "{reply}");
    d.shutdown().await;

    // The 1 s TTL of short.example.test. runs out before the load.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (d, addr) = start(&cfg).await;
    let reply = execute(d.handler(), &format!("load-cache {}", file.display()));
    assert!(
        reply.starts_with("ok loaded") && reply.contains("(1 expired"),
        "{reply}"
    );
    sim.clear_queries();
    ask(addr, "www.example.test.", RecordType::A).await;
    assert_eq!(sim.total_queries(), 0, "www came from the dump");
    ask(addr, "short.example.test.", RecordType::A).await;
    assert!(sim.total_queries() > 0, "the expired entry was not loaded");
    d.shutdown().await;

    // A damaged dump is refused whole; the daemon keeps serving.
    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&file, &bytes).unwrap();
    let mut cfg = cfg;
    cfg.cache.persist = Some(file.clone());
    let (d, addr) = start(&cfg).await;
    assert_eq!(d.handler().cache.usage().0, 0, "nothing loaded at start");
    let reply = execute(d.handler(), &format!("load-cache {}", file.display()));
    assert!(
        reply.starts_with("error:") && reply.contains("corrupt"),
        "{reply}"
    );
    std::fs::write(&file, &bytes[..bytes.len() / 3]).unwrap();
    let reply = execute(d.handler(), &format!("load-cache {}", file.display()));
    assert!(reply.starts_with("error:"), "{reply}");
    let r = ask(addr, "www.example.test.", RecordType::A).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn control_servers_shows_rtt_and_a_lame_server_held_down() {
    use resolvd::control::execute;
    let sim = Sim::start(world(207)).await;
    sim.server("127.207.0.3").set_faults(Faults {
        rcode: Some(ResponseCode::Refused),
        ..Default::default()
    });
    let mut cfg = config_for(&sim);
    cfg.metrics.listen = Some("127.0.0.1:0".parse().unwrap());
    let (d, addr) = start(&cfg).await;
    assert!(execute(d.handler(), "servers").starts_with("no upstream servers"));
    let mut text = String::new();
    for i in 0..10 {
        let r = ask(addr, &format!("n{i}.example.test."), RecordType::A).await;
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
        text = execute(d.handler(), "servers");
        if text.contains("lame for example.test.") {
            break;
        }
    }
    let line = |ip: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("{ip} ")))
            .unwrap_or_else(|| panic!("no line for {ip}:\n{text}"))
            .to_string()
    };
    assert!(text.starts_with("ADDRESS"), "{text}");
    assert!(
        line("127.207.0.3").contains("lame for example.test."),
        "{text}"
    );
    for ip in ["127.207.0.1", "127.207.0.2", "127.207.0.6"] {
        let l = line(ip);
        assert!(l.trim_end().ends_with(" -"), "{ip} not held down: {l}");
        let srtt: f64 = l.split_whitespace().nth(1).unwrap().parse().unwrap();
        assert!((0.0..1000.0).contains(&srtt), "{l}");
    }
    let m = scrape(d.metrics_addr().unwrap()).await;
    assert_eq!(
        get(&m, r#"resolvd_upstream_servers_held_down{reason="lame"}"#),
        1.0
    );
    assert_eq!(
        get(&m, r#"resolvd_upstream_servers_held_down{reason="dead"}"#),
        0.0
    );
    assert!(get(&m, r#"resolvd_upstream_outcomes_total{outcome="lame"}"#) >= 1.0);
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn control_pools_shows_members_health_and_selections() {
    use resolvd::control::execute;
    use resolvd::resolve::Refuse;
    // .1 accepts the health probe's TCP connect; .2 has nothing listening.
    let probe_target = std::net::TcpListener::bind("127.206.0.1:0").unwrap();
    let port = probe_target.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("svc.test.zone"),
        "$ORIGIN svc.test.\n$TTL 60\n@ SOA ns1 hostmaster 1 3600 600 86400 60\n@ NS ns1\nns1 A 192.0.2.1\n",
    )
    .unwrap();
    let path = dir.path().join("resolvd.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[server]
listen = ["127.0.0.1:0"]
threads = 2
[control]
enabled = false
[metrics]
listen = "127.0.0.1:0"
[geo.regions]
eu = ["10.1.0.0/16"]
[[zone]]
origin = "svc.test."
file = "svc.test.zone"
[[zone.pool]]
name = "api"
type = "A"
answers = 1
members = [
  {{ value = "127.206.0.1", weight = 3, region = "eu" }},
  {{ value = "127.206.0.2", weight = 1 }},
]
fallback = "all"
health = {{ tcp_port = {port}, interval = "100ms", timeout = "200ms", fails = 1 }}
"#
        ),
    )
    .unwrap();
    let cfg = resolvd::config::Config::load(&path).unwrap();
    let d = resolvd::daemon::Daemon::start_with(
        &cfg,
        std::sync::Arc::new(Refuse),
        std::sync::Arc::new(resolvd::metrics::Metrics::default()),
    )
    .await
    .unwrap();
    let addr = d.local_addrs()[0];
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut text = execute(d.handler(), "pools");
    while !text.contains(" down ") {
        assert!(std::time::Instant::now() < deadline, "never down:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
        text = execute(d.handler(), "pools");
    }
    for _ in 0..10 {
        let r = ask(addr, "api.svc.test.", RecordType::A).await;
        assert_eq!(addrs(&r), vec!["127.206.0.1".to_string()]);
    }
    let text = execute(d.handler(), "pools");
    let cols = |member: &str| -> Vec<String> {
        text.lines()
            .find(|l| l.contains(member))
            .unwrap_or_else(|| panic!("no {member}:\n{text}"))
            .split_whitespace()
            .map(String::from)
            .collect()
    };
    assert_eq!(
        cols("127.206.0.1"),
        ["api.svc.test.", "A", "127.206.0.1", "3", "eu", "up", "10"],
        "{text}"
    );
    assert_eq!(
        cols("127.206.0.2"),
        ["api.svc.test.", "A", "127.206.0.2", "1", "-", "down", "0"],
        "{text}"
    );
    let m = scrape(d.metrics_addr().unwrap()).await;
    let key = |metric: &str, member: &str| {
        format!(r#"{metric}{{pool="api.svc.test.",type="A",member="{member}"}}"#)
    };
    assert_eq!(
        get(&m, &key("resolvd_pool_selections_total", "127.206.0.1")),
        10.0
    );
    assert_eq!(get(&m, &key("resolvd_pool_member_up", "127.206.0.1")), 1.0);
    assert_eq!(get(&m, &key("resolvd_pool_member_up", "127.206.0.2")), 0.0);
    assert_eq!(get(&m, "resolvd_local_answers_total"), 10.0);
    drop(probe_target);
    d.shutdown().await;
}

/// `[[zone]]` tables parsed on their own, to splice into a configuration.
fn zones_from(toml: &str) -> Vec<resolvd::zones::ZoneConfig> {
    resolvd::config::Config::parse(toml, "zones.toml")
        .expect("zone tables parse")
        .zone
}

const LOCAL_ZONE: &str = r#"
[[zone]]
origin = "local.test."
[[zone.pool]]
name = "api"
type = "A"
members = [{ value = "192.0.2.77", weight = 1 }]
"#;

#[tokio::test(flavor = "multi_thread")]
async fn reload_applies_each_setting_group_and_a_bad_one_changes_nothing() {
    let sim = Sim::start(world(208)).await;
    let cfg = config_for(&sim);
    let (d, addr) = start(&cfg).await;
    let r = ask(addr, "www.example.test.", RecordType::A).await;
    assert_eq!(r.answers[0].ttl, 300);

    // Zones, cache TTL clamps, resolver budgets, a second listener, the
    // metrics endpoint, all in one reload.
    let mut next = cfg.clone();
    next.zone = zones_from(LOCAL_ZONE);
    next.cache.max_ttl = 60;
    next.resolver.max_upstream_queries = 40;
    next.server
        .listen
        .push("127.208.0.50:0".parse::<SocketAddr>().unwrap());
    next.metrics.listen = Some("127.0.0.1:0".parse().unwrap());
    next.server.threads = 3;
    let report = d.reload(&next).expect("reload accepted");
    let text = report.to_string();
    for what in [
        "zones",
        "cache",
        "resolver",
        "metrics",
        "listen +127.208.0.50:",
    ] {
        assert!(text.contains(what), "{what} not in {text}");
    }
    assert_eq!(report.needs_restart, vec!["threads".to_string()], "{text}");
    assert_eq!(d.local_addrs().len(), 2);
    assert_eq!(d.local_addrs()[0], addr, "the unchanged socket is kept");
    let second = d.local_addrs()[1];
    let r = ask(second, "api.local.test.", RecordType::A).await;
    assert_eq!(addrs(&r), vec!["192.0.2.77".to_string()]);
    let r = ask(addr, "mail.example.test.", RecordType::A).await;
    assert_eq!(r.answers[0].ttl, 60, "max_ttl applies to new answers");
    let maddr = d
        .metrics_addr()
        .expect("metrics endpoint started by reload");
    let m = scrape(maddr).await;
    assert_eq!(get(&m, "resolvd_local_answers_total"), 1.0);

    // The access list; the first address removed, the metrics endpoint off.
    let mut third = next.clone();
    third.server.allow = vec!["10.0.0.0/8".parse().unwrap()];
    third.server.listen = vec!["127.208.0.50:0".parse().unwrap()];
    third.metrics.listen = None;
    let text = d.reload(&third).expect("reload accepted").to_string();
    assert!(
        text.contains("allow") && text.contains("listen -"),
        "{text}"
    );
    assert_eq!(d.local_addrs(), vec![second]);
    let r = ask(second, "www.example.test.", RecordType::A).await;
    assert_eq!(r.metadata.response_code, ResponseCode::Refused);
    assert!(
        query_udp(addr, "www.example.test.", RecordType::A, 500)
            .await
            .is_none(),
        "the removed address is closed"
    );
    assert!(d.metrics_addr().is_none());
    assert!(tokio::net::TcpStream::connect(maddr).await.is_err());

    // A bad zone and a taken address: rejected whole, nothing changes.
    let taken = std::net::UdpSocket::bind("127.208.0.60:0").unwrap();
    let mut bad = next.clone();
    bad.zone = zones_from(&LOCAL_ZONE.replace("192.0.2.77", "not-an-address"));
    bad.server.listen.push(taken.local_addr().unwrap());
    let err = d.reload(&bad).expect_err("bad reload rejected");
    assert_eq!(err.0.len(), 2, "both problems reported: {err}");
    assert!(err.to_string().contains("not-an-address"), "{err}");
    assert_eq!(d.local_addrs(), vec![second]);
    let r = ask(second, "www.example.test.", RecordType::A).await;
    assert_eq!(
        r.metadata.response_code,
        ResponseCode::Refused,
        "the old access list still applies"
    );

    // Resolver budgets: one upstream query cannot walk from the root.
    let mut tight = third.clone();
    tight.server.allow = cfg.server.allow.clone();
    tight.resolver.max_upstream_queries = 1;
    let text = d.reload(&tight).expect("reload accepted").to_string();
    assert!(
        text.contains("resolver") && text.contains("allow"),
        "{text}"
    );
    let r = ask(second, "fresh1.example.test.", RecordType::A).await;
    assert_eq!(r.metadata.response_code, ResponseCode::ServFail);
    tight.resolver.max_upstream_queries = 100;
    d.reload(&tight).expect("reload accepted");
    let r = ask(second, "fresh2.example.test.", RecordType::A).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    d.shutdown().await;
}

#[test]
fn control_reload_reports_changes_and_rejects_a_bad_file_with_its_errors() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port("127.209.0.1");
    let sock = dir.path().join("control.sock");
    let cfg = dir.path().join("resolvd.toml");
    let text = |allow: &str| {
        format!(
            "[server]\nlisten = [\"127.209.0.1:{port}\"]\nallow = [{allow}]\n\
             [control]\nsocket = \"{}\"\n",
            sock.display()
        )
    };
    std::fs::write(&cfg, text("\"127.0.0.0/8\"")).unwrap();
    let _p = Process(
        std::process::Command::new(BIN)
            .arg("--config")
            .arg(&cfg)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn resolvd"),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !sock.exists() {
        assert!(std::time::Instant::now() < deadline, "no control socket");
        std::thread::sleep(Duration::from_millis(20));
    }
    let control = |cmd: &str| {
        let out = std::process::Command::new(BIN)
            .args(["control", "--socket"])
            .arg(&sock)
            .arg(cmd)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    std::fs::write(&cfg, text("\"127.0.0.0/8\", \"::1/128\"")).unwrap();
    let (ok, out) = control("reload");
    assert!(
        ok && out.contains("ok reloaded") && out.contains("changed: allow"),
        "{out}"
    );

    std::fs::write(&cfg, text("\"127.0.0.0/33\"") + "bogus_key = 1\n").unwrap();
    let (ok, out) = control("reload");
    assert!(!ok, "{out}");
    assert!(out.contains("resolvd.toml:3: allow: "), "{out}");
    assert!(out.contains("old configuration kept"), "{out}");
    let (ok, out) = control("stats");
    assert!(ok && out.contains("queries"), "still serving: {out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn reload_under_load_loses_no_query() {
    let sim = Sim::start(world(209)).await;
    let cfg = config_for(&sim);
    let (d, addr) = start(&cfg).await;
    ask(addr, "www.example.test.", RecordType::A).await;
    let d = std::sync::Arc::new(d);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Clients sending continuously: UDP and one TCP connection.
    let udp = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let (mut sent, mut answered) = (0u32, 0u32);
            let until = std::time::Instant::now() + Duration::from_secs(10);
            while !stop.load(std::sync::atomic::Ordering::Relaxed)
                && sent < 20_000
                && std::time::Instant::now() < until
            {
                sent += 1;
                if let Some(r) = query_udp(addr, "www.example.test.", RecordType::A, 2000).await {
                    if r.metadata.response_code == ResponseCode::NoError {
                        answered += 1;
                    }
                }
            }
            (sent, answered)
        })
    };
    let tcp = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut s = tcp_connect(addr, 2000).await.expect("TCP connect");
            let (mut sent, mut answered) = (0u32, 0u32);
            let until = std::time::Instant::now() + Duration::from_secs(10);
            while !stop.load(std::sync::atomic::Ordering::Relaxed)
                && sent < 20_000
                && std::time::Instant::now() < until
            {
                sent += 1;
                let q = make_query("www.example.test.", RecordType::A, false);
                if tcp_write_msg(&mut s, &q).await.is_err() {
                    break;
                }
                if tcp_read_msg(&mut s, 2000).await.is_some() {
                    answered += 1;
                }
            }
            (sent, answered)
        })
    };
    let mut other = cfg.clone();
    other.zone = zones_from(LOCAL_ZONE);
    other.cache.max_ttl = 3600;
    other.resolver.max_upstream_queries = 50;
    other
        .server
        .listen
        .push("127.209.0.70:0".parse::<SocketAddr>().unwrap());
    other.server.allow.push("10.0.0.0/8".parse().unwrap());
    for i in 0..20 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let next = if i % 2 == 0 { &other } else { &cfg };
        d.reload(next).expect("reload accepted");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (us, ua) = udp.await.unwrap();
    let (ts, ta) = tcp.await.unwrap();
    eprintln!("reload under load: udp {ua}/{us}, tcp {ta}/{ts}");
    assert!(us > 100 && ts > 100, "load was sent: udp {us}, tcp {ts}");
    assert_eq!(ua, us, "UDP queries lost across 20 reloads");
    assert_eq!(ta, ts, "TCP queries lost across 20 reloads");
}

#[tokio::test(flavor = "multi_thread")]
async fn trace_names_each_server_of_a_three_level_walk_in_order() {
    use resolvd::control::{execute, execute_async};
    let sim = Sim::start(world_in("127.201.1")).await;
    let cfg = config_for(&sim);
    let (d, addr) = start(&cfg).await;
    // Warm every cache: the trace must walk all the same.
    ask(addr, "www.example.test.", RecordType::A).await;
    sim.clear_queries();

    let mut text = execute_async(d.handler(), "trace www.example.test. A").await;
    text.push_str(&execute_async(d.handler(), "trace www.example.test. AAAA json").await);
    let (plain, json) = text.split_at(text.find('{').expect("JSON after the text"));
    let servers: Vec<&str> = plain
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|w| w.starts_with("127.201.1."))
        .collect();
    // root, test., then either server of example.test.
    assert_eq!(servers.len(), 3, "{plain}");
    assert_eq!(servers[..2], ["127.201.1.1", "127.201.1.2"], "{plain}");
    assert!(
        ["127.201.1.3", "127.201.1.6"].contains(&servers[2]),
        "{plain}"
    );
    let lines: Vec<&str> = plain.lines().collect();
    assert!(
        lines[1].contains("zone .") && lines[1].contains("referral to test."),
        "{plain}"
    );
    assert!(
        lines[2].contains("zone test.") && lines[2].contains("referral to example.test."),
        "{plain}"
    );
    assert!(
        lines[3].contains("zone example.test.")
            && lines[3].contains("www.example.test. A")
            && lines[3].contains("NOERROR")
            && lines[3].contains("answer (1 records)"),
        "{plain}"
    );
    // QNAME minimisation: the root was asked for test., not the full name.
    assert!(lines[1].contains(" test. A (minimised)"), "{plain}");
    assert!(lines[2].contains(" example.test. A (minimised)"), "{plain}");
    assert!(
        plain.contains("answer: NOERROR") && plain.contains("192.0.2.10"),
        "{plain}"
    );
    assert!(
        sim.total_queries() >= 6,
        "both traces walked: {}",
        sim.total_queries()
    );

    let v: serde_json::Value = serde_json::from_str(json).expect("valid JSON");
    assert_eq!(v["qtype"], "AAAA");
    assert_eq!(v["rcode"], "NOERROR");
    let steps = v["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 3, "{json}");
    assert_eq!(steps[0]["server"], "127.201.1.1");
    let third = steps[2]["server"].as_str().unwrap();
    assert!(third == "127.201.1.3" || third == "127.201.1.6", "{json}");
    assert_eq!(steps[2]["minimised"], false);
    assert!(steps[2]["rtt_ms"].as_f64().unwrap() >= 0.0);
    assert!(v["answer"][0].as_str().unwrap().contains("2001:db8::10"));

    // The trace stored what it learned: the AAAA now comes from the cache.
    sim.clear_queries();
    ask(addr, "www.example.test.", RecordType::AAAA).await;
    assert_eq!(sim.total_queries(), 0);
    assert!(execute(d.handler(), "trace").starts_with("error"));
    d.shutdown().await;

    // A daemon that has not primed yet: the priming query is listed first.
    let (d, _) = start(&cfg).await;
    let text = execute_async(d.handler(), "trace mail.example.test.").await;
    let first = text.lines().nth(1).unwrap_or("");
    assert!(
        first.contains("127.201.1.1")
            && first.contains(". NS")
            && first.contains("root priming: 1 NS"),
        "{text}"
    );
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn dnstap_resolver_messages_name_each_upstream_server() {
    let sim = Sim::start(world_in("127.202.1")).await;
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("dnstap.sock");
    let file = dir.path().join("upstream.fstrm");
    let cap = fstrm_capture(&sock, &file);
    let mut cfg = config_for(&sim);
    cfg.dnstap.socket = Some(sock.clone());
    cfg.dnstap.client = false;
    cfg.dnstap.resolver = true;
    let (d, addr) = start(&cfg).await;
    until_dnstap_delivers(&d.handler().metrics, addr, "example.test.").await;
    sim.clear_queries();
    let r = ask(addr, "mail.example.test.", RecordType::A).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    let upstream = sim.total_queries();
    d.shutdown().await;
    let text = stop_and_read(cap, &file);
    // Query names go out with 0x20 case randomisation: compare folded.
    let lower = text.to_ascii_lowercase();
    let rq: Vec<&str> = lower
        .lines()
        .filter(|l| l.contains(" rq ") && l.contains("mail.example.test."))
        .collect();
    let rr: Vec<&str> = lower
        .lines()
        .filter(|l| l.contains(" rr ") && l.contains("mail.example.test."))
        .collect();
    assert_eq!(
        rq.len(),
        upstream,
        "one RESOLVER_QUERY per upstream query:\n{text}"
    );
    assert_eq!(rr.len(), upstream, "one RESOLVER_RESPONSE each:\n{text}");
    assert!(
        rq.iter()
            .all(|l| l.contains("127.202.1.3") || l.contains("127.202.1.6")),
        "the example.test. servers are named:\n{text}"
    );
    assert!(!text.contains(" CQ "), "client messages are off:\n{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn dnstap_resolver_messages_cover_a_forward_zone_over_tls() {
    use resolvd::resolve::forward::{ForwardConfig, ForwardTls};
    use support::dot::{dot_server, Certs};
    let sim = Sim::start(world_in("127.224.2")).await;
    let certs = Certs::new();
    let (_server, dot) = dot_server(&certs, 224).await;
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("dnstap.sock");
    let file = dir.path().join("dot.fstrm");
    let cap = fstrm_capture(&sock, &file);
    let mut cfg = config_for(&sim);
    cfg.forward = vec![ForwardConfig {
        zone: "corp.test.".into(),
        servers: vec![dot.to_string()],
        recursion: true,
        fallback: false,
        tls: Some(ForwardTls {
            name: "dns.test".into(),
            ca: Some(certs.path("ca.pem")),
        }),
    }];
    cfg.dnstap.socket = Some(sock.clone());
    cfg.dnstap.client = false;
    cfg.dnstap.resolver = true;
    let (d, addr) = start(&cfg).await;
    let m = d.handler().metrics.clone();
    until_dnstap_delivers(&m, addr, "corp.test.").await;
    let r = ask(addr, "mail.corp.test.", RecordType::A).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    until_dnstap_settles(&m).await;
    d.shutdown().await;
    let text = stop_and_read(cap, &file);
    let lines = |kind: &str| {
        text.lines()
            .filter(|l| l.contains(kind) && l.contains("mail.corp.test."))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let (rq, rr) = (lines(" RQ "), lines(" RR "));
    assert_eq!(rq.len(), 1, "the query to the DoT forwarder:\n{text}");
    assert_eq!(rr.len(), 1, "and its reply:\n{text}");
    let server = dot.ip().to_string();
    // Logged as SocketProtocol DOT, which Debian's dnstap-ldns predates
    // and prints as "?": anything but UDP or TCP.
    assert!(
        rq.iter()
            .chain(&rr)
            .all(|l| l.contains(&format!(" {server} ? "))),
        "both name the DoT server {server}, not as UDP or TCP:\n{text}"
    );
    assert!(
        sim.server("127.224.2.1").queries().is_empty(),
        "the forward zone never reached the root"
    );
}

#[test]
fn sighup_applies_a_new_log_level() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port("127.203.0.3");
    let path = dir.path().join("resolvd.toml");
    let text = |level: &str| {
        format!(
            "[server]\nlisten = [\"127.203.0.3:{port}\"]\n[control]\nenabled = false\n\
             [log]\nlevel = \"{level}\"\n"
        )
    };
    std::fs::write(&path, text("warn")).unwrap();
    // READY=1 tells when it runs, since at "warn" it logs nothing.
    let notify = std::os::unix::net::UnixDatagram::bind(dir.path().join("notify.sock")).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let notify_path = dir.path().join("notify.sock");
    let (p, rx) = spawn_resolvd(&path, &[("NOTIFY_SOCKET", &notify_path)]);
    assert!(next_notification(&notify).contains("READY=1"));
    std::fs::write(&path, text("info")).unwrap();
    p.signal(libc::SIGHUP);
    assert!(next_notification(&notify).contains("RELOADING=1"));
    assert!(next_notification(&notify).contains("READY=1"));
    let (seen, _) = lines_until(&rx, "reloaded", Duration::from_secs(5));
    assert!(
        !seen.iter().any(|l| l.contains("resolvd started")),
        "info was off before the reload: {seen:?}"
    );
    assert!(
        seen.last()
            .is_some_and(|l| l.contains("INFO") && l.contains("reloaded")),
        "info is on after it: {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn reload_turns_dnstap_on_and_off() {
    use std::sync::atomic::Ordering::Relaxed;
    let sim = Sim::start(world_in("127.202.2")).await;
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("dnstap.sock");
    let file = dir.path().join("reload.fstrm");
    let cap = fstrm_capture(&sock, &file);
    let cfg = config_for(&sim);
    let (d, addr) = start(&cfg).await;
    ask(addr, "before.example.test.", RecordType::A).await;
    let mut on = cfg.clone();
    on.dnstap.socket = Some(sock.clone());
    assert!(d.reload(&on).unwrap().to_string().contains("dnstap"));
    let m = d.handler().metrics.clone();
    until_dnstap_flows(addr, &m, 0).await;
    ask(addr, "during.example.test.", RecordType::A).await;
    // Off again: the writer flushes, sends STOP and the reader's file is whole.
    assert!(d.reload(&cfg).unwrap().to_string().contains("dnstap"));
    // The old writer still flushes what was queued before it stopped.
    until_dnstap_settles(&m).await;
    let sent = m.dnstap_sent.load(Relaxed);
    ask(addr, "after.example.test.", RecordType::A).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(m.dnstap_sent.load(Relaxed), sent, "nothing sent once off");
    let text = stop_and_read(cap, &file);
    assert!(text.contains("during.example.test."), "{text}");
    assert!(!text.contains("before.example.test."), "{text}");
    assert!(!text.contains("after.example.test."), "{text}");
    d.shutdown().await;
}

/// A resolver that answers NXDOMAIN after a pause: long enough for
/// identical questions sent together to join one resolution.
struct Slow;

impl resolvd::resolve::Resolve for Slow {
    fn resolve(
        &self,
        _qname: hickory_proto::rr::Name,
        _qtype: RecordType,
    ) -> resolvd::resolve::BoxFuture<'_, resolvd::wire::answer::Sections> {
        Box::pin(async {
            tokio::time::sleep(Duration::from_millis(800)).await;
            resolvd::wire::answer::Sections::error(3, None)
        })
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn identical_questions_at_once_are_counted_as_coalesced() {
    let mut cfg = resolvd::config::Config::embedded_default();
    cfg.server.listen = vec!["127.0.0.1:0".parse().unwrap()];
    cfg.server.threads = 2;
    cfg.control.enabled = false;
    cfg.metrics.listen = Some("127.0.0.1:0".parse().unwrap());
    let d = resolvd::daemon::Daemon::start_with(
        &cfg,
        std::sync::Arc::new(Slow),
        std::sync::Arc::new(resolvd::metrics::Metrics::default()),
    )
    .await
    .unwrap();
    let addr = d.local_addrs()[0];
    let maddr = d.metrics_addr().unwrap();
    let before = scrape(maddr).await;
    let asks: Vec<_> = (0..5)
        .map(|_| tokio::spawn(async move { ask(addr, "slow.example.", RecordType::A).await }))
        .collect();
    for a in asks {
        let r = a.await.unwrap();
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    }
    let after = scrape(maddr).await;
    let delta = |k: &str| get(&after, k) - get(&before, k);
    assert_eq!(
        delta("resolvd_coalesced_queries_total"),
        4.0,
        "five identical questions, one resolution"
    );
    assert_eq!(delta("resolvd_cache_misses_total"), 5.0);
    assert_eq!(delta("resolvd_resolution_duration_seconds_count"), 5.0);
    // All five waited for the one resolution: at least 0.8 s each.
    assert!(delta("resolvd_resolution_duration_seconds_sum") >= 4.0);
    d.shutdown().await;
}

/// A resolver that counts its calls and takes 800 ms for each.
struct Counted(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl resolvd::resolve::Resolve for Counted {
    fn resolve(
        &self,
        _qname: hickory_proto::rr::Name,
        _qtype: RecordType,
    ) -> resolvd::resolve::BoxFuture<'_, resolvd::wire::answer::Sections> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Box::pin(async {
            tokio::time::sleep(Duration::from_millis(800)).await;
            resolvd::wire::answer::Sections::error(3, None)
        })
    }
}

/// A UDP miss runs its resolution in its own task. Should that task be
/// dropped half-way, the query that joined it gets SERVFAIL at once, not
/// a wait for ever, and the next query for the name starts afresh.
#[tokio::test(flavor = "multi_thread")]
async fn a_dropped_udp_resolution_releases_who_joined_it() {
    use resolvd::handler::Transport;
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut cfg = resolvd::config::Config::embedded_default();
    cfg.server.listen = vec!["127.0.0.1:0".parse().unwrap()];
    cfg.control.enabled = false;
    let d = resolvd::daemon::Daemon::start_with(
        &cfg,
        std::sync::Arc::new(Counted(calls.clone())),
        std::sync::Arc::new(resolvd::metrics::Metrics::default()),
    )
    .await
    .unwrap();
    let pkt = make_query("slow.example.", RecordType::A, false)
        .to_vec()
        .unwrap();
    let client: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    let answer = |t: Transport| {
        let h = d.handler().clone();
        let pkt = pkt.clone();
        tokio::spawn(async move {
            let mut out = Vec::new();
            h.answer_resolved(&pkt, client, t, &mut out).await;
            out
        })
    };
    let lead = answer(Transport::Udp);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let joined = answer(Transport::Tcp);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    lead.abort();
    let out = tokio::time::timeout(Duration::from_millis(300), joined)
        .await
        .expect("the joined query was released when the resolution was dropped")
        .unwrap();
    let reply = hickory_proto::op::Message::from_vec(&out).unwrap();
    assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
    let out = answer(Transport::Udp).await.unwrap();
    let reply = hickory_proto::op::Message::from_vec(&out).unwrap();
    assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(
        calls.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "the next query resolved afresh"
    );
    d.shutdown().await;
}

/// A server address where nothing listens answers with an ICMP port
/// unreachable. The upstream socket is connected, so the kernel reports
/// it and the exchange fails at once as an error, the server marked dead,
/// instead of waiting out the timeout.
#[tokio::test(flavor = "multi_thread")]
async fn a_closed_upstream_port_is_an_error_not_a_timeout() {
    let p = "127.200.2";
    let root = format!(
        "$ORIGIN .\n$TTL 86400\n@ SOA a.root-servers.test. hostmaster.test. 1 3600 600 86400 300\n\
         @ NS a.root-servers.test.\na.root-servers.test. A {p}.1\ntest. NS ns1.test.\nns1.test. A {p}.2\n"
    );
    // closed.test.'s only server is {p}.9, which no simulated server holds.
    let tld = format!(
        "$ORIGIN test.\n$TTL 86400\n@ SOA ns1 hostmaster 1 3600 600 86400 300\n@ NS ns1\n\
         ns1 A {p}.2\nclosed NS ns1.closed\nns1.closed A {p}.9\n"
    );
    let sim = Sim::start(vec![
        ServerSpec::new("a.root-servers.test.", &format!("{p}.1"), &[&root]).root(),
        ServerSpec::new("ns1.test.", &format!("{p}.2"), &[&tld]),
    ])
    .await;
    let mut cfg = config_for(&sim);
    cfg.metrics.listen = Some("127.0.0.1:0".parse().unwrap());
    // Long enough that a timeout could not go unnoticed in the counts.
    cfg.resolver.initial_timeout = resolvd::config::Dur::millis(2000);
    let (d, addr) = start(&cfg).await;
    let maddr = d.metrics_addr().unwrap();
    let before = scrape(maddr).await;
    let r = ask(addr, "www.closed.test.", RecordType::A).await;
    assert_eq!(r.metadata.response_code, ResponseCode::ServFail);
    let after = scrape(maddr).await;
    let delta = |k: &str| get(&after, k) - get(&before, k);
    assert!(delta(r#"resolvd_upstream_outcomes_total{outcome="error"}"#) >= 1.0);
    assert_eq!(
        delta(r#"resolvd_upstream_outcomes_total{outcome="timeout"}"#),
        0.0
    );
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_timeouts_are_counted_by_outcome() {
    let sim = Sim::start(world_in("127.200.1")).await;
    let mut cfg = config_for(&sim);
    cfg.metrics.listen = Some("127.0.0.1:0".parse().unwrap());
    cfg.resolver.initial_timeout = resolvd::config::Dur::millis(100);
    cfg.resolver.max_timeout = resolvd::config::Dur::millis(200);
    let (d, addr) = start(&cfg).await;
    let maddr = d.metrics_addr().unwrap();
    ask(addr, "mail.example.test.", RecordType::A).await;
    for s in ["127.200.1.3", "127.200.1.6"] {
        sim.server(s).set_faults(Faults {
            silent: true,
            ..Default::default()
        });
    }
    let before = scrape(maddr).await;
    let r = ask(addr, "gone.example.test.", RecordType::A).await;
    assert_eq!(r.metadata.response_code, ResponseCode::ServFail);
    let after = scrape(maddr).await;
    let delta = |k: &str| get(&after, k) - get(&before, k);
    let timeouts = delta(r#"resolvd_upstream_outcomes_total{outcome="timeout"}"#);
    assert!(timeouts >= 2.0, "timeouts {timeouts}");
    assert_eq!(
        delta(r#"resolvd_upstream_outcomes_total{outcome="answered"}"#),
        0.0
    );
    assert_eq!(delta(r#"resolvd_responses_total{rcode="SERVFAIL"}"#), 1.0);
    d.shutdown().await;
}
