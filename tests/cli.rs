//! The `resolvd` binary as a user runs it: flags, exit codes, config errors,
//! dig against the real process, signals, the control socket.

mod support;

use std::io::Read;
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_resolvd");

/// Kills the daemon it holds (by PID) when dropped, even on test failure.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    // Bound and released: the daemon can take it next.
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run resolvd")
}

fn spawn(args: &[&str]) -> Daemon {
    Daemon(
        Command::new(BIN)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn resolvd"),
    )
}

fn dig(args: &[&str]) -> String {
    let out = Command::new("dig")
        .args(args)
        .output()
        .expect("dig is missing: install Debian package dnsutils");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits until the daemon answers over UDP (bounded).
fn wait_ready(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if dig(&[
            "@127.0.0.1",
            "-p",
            &port.to_string(),
            "+time=1",
            "+tries=1",
            "ready.invalid",
        ])
        .contains("status:")
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("resolvd did not start on port {port}");
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

#[test]
fn version_and_help_describe_the_cli() {
    let v = run(&["--version"]);
    assert!(v.status.success());
    assert!(String::from_utf8_lossy(&v.stdout).starts_with("resolvd "));
    let h = String::from_utf8_lossy(&run(&["--help"]).stdout).into_owned();
    for flag in [
        "--config",
        "--listen",
        "--root-hints",
        "--threads",
        "check-config",
        "control",
    ] {
        assert!(h.contains(flag), "--help mentions {flag}");
    }
}

#[test]
fn check_config_reports_each_error_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let bad = write(
        dir.path(),
        "bad.toml",
        "[server]\nthreads = 2\nlisten = [\"not-an-address\"]\n",
    );
    let out = run(&["check-config", &bad]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{bad}:3: listen:")), "{err}");
    let typo = write(dir.path(), "typo.toml", "[cache]\nmax_sise = \"1MiB\"\n");
    let err = String::from_utf8_lossy(&run(&["check-config", &typo]).stderr).into_owned();
    assert!(
        err.contains(":2: max_sise:") && err.contains("unknown field"),
        "{err}"
    );
    let zone = write(
        dir.path(),
        "zone.toml",
        "[[zone]]\norigin = \"a.test.\"\n[[zone.pool]]\nname = \"www\"\ntype = \"A\"\nmembers = [{ value = \"::1\", weight = 1 }]\n",
    );
    let out = run(&["check-config", &zone]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        err.contains(&format!("{zone}:6: ")) && err.contains("IPv4"),
        "bad pool member named with its line: {err}"
    );
    let good = run(&["check-config", "config/resolvd.toml"]);
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );
}

#[test]
fn daemon_with_bad_config_exits_2_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let bad = write(
        dir.path(),
        "bad.toml",
        "[resolver]\nupstream_port = \"fifty-three\"\n",
    );
    let out = run(&["--config", &bad]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains(":2: upstream_port:"), "{err}");
    // Errors beyond the TOML (a pool member of the wrong family) too.
    let zone = write(
        dir.path(),
        "zone.toml",
        "[[zone]]\norigin = \"a.test.\"\n[[zone.pool]]\nname = \"www\"\ntype = \"A\"\nmembers = [{ value = \"::1\", weight = 1 }]\n",
    );
    let out = run(&["--config", &zone]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains(&zone) && err.contains("IPv4"), "{err}");
}

#[test]
fn failed_bind_exits_1_naming_the_address() {
    let holder = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = holder.local_addr().unwrap().to_string();
    let out = run(&["--listen", &addr]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&addr) && err.contains("--listen 127.0.0.1:5353"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn daemon_resolves_for_dig_and_exits_on_sigterm() {
    let root = "$ORIGIN .
@ SOA a.root-servers.test. h.test. 1 3600 600 86400 300
@ NS a.root-servers.test.
a.root-servers.test. A 127.120.0.1
test. NS ns1.test.
ns1.test. A 127.120.0.2
";
    let tld = "$ORIGIN test.
@ SOA ns1 h 1 3600 600 86400 300
@ NS ns1
ns1 A 127.120.0.2
www 300 A 192.0.2.1
www 300 AAAA 2001:db8::1
";
    let sim = Sim::start(vec![
        ServerSpec::new("a.root-servers.test.", "127.120.0.1", &[root]).root(),
        ServerSpec::new("ns1.test.", "127.120.0.2", &[tld]),
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let sock = dir.path().join("ctl.sock");
    let cfg = write(
        dir.path(),
        "r.toml",
        &format!(
            "[server]\nlisten = [\"127.0.0.1:{port}\"]\n[resolver]\nquery_loopback = true\nupstream_port = {}\nspecial_use_exclude = [\"test.\"]\n[dnssec]\nvalidation = false\n[control]\nsocket = \"{}\"\n",
            sim.port(),
            sock.display()
        ),
    );
    let hints = sim.root_hints_path().display().to_string();
    let mut d = spawn(&["--config", &cfg, "--root-hints", &hints, "--threads", "2"]);
    let p = port.to_string();
    tokio::task::spawn_blocking(move || wait_ready(port))
        .await
        .unwrap();
    let out = tokio::task::spawn_blocking({
        let p = p.clone();
        move || dig(&["@127.0.0.1", "-p", &p, "www.test", "A", "+short"])
    })
    .await
    .unwrap();
    assert_eq!(out.trim(), "192.0.2.1");
    let full =
        tokio::task::spawn_blocking(move || dig(&["@127.0.0.1", "-p", &p, "www.test", "AAAA"]))
            .await
            .unwrap();
    assert!(
        full.contains("status: NOERROR") && full.contains("flags: qr rd ra"),
        "{full}"
    );
    assert!(full.contains("2001:db8::1"));

    // The control socket is private to its owner.
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let sock_s = sock.display().to_string();
    let stats = run(&["control", "--socket", &sock_s, "stats"]);
    let stats = String::from_utf8_lossy(&stats.stdout).into_owned();
    assert!(
        stats.contains("queries ") && stats.contains("cache_entries "),
        "{stats}"
    );
    let flush = run(&[
        "control",
        "--socket",
        &sock_s,
        "flush",
        "www.test",
        "--subtree",
    ]);
    assert!(flush.status.success());

    unsafe { libc::kill(d.0.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = d.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success());
    let mut err = String::new();
    d.0.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(
        err.contains(&format!("listening on 127.0.0.1:{port}")),
        "{err}"
    );
    let _: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
}

fn zone_config(port: u16, member: &str) -> String {
    format!(
        "[server]\nlisten = [\"127.0.0.1:{port}\"]\n[control]\nenabled = false\n\
         [[zone]]\norigin = \"lb.test.\"\n[[zone.pool]]\nname = \"www\"\ntype = \"A\"\n\
         members = [{{ value = \"{member}\", weight = 1 }}]\n"
    )
}

#[test]
fn sighup_reloads_zones_and_a_bad_file_keeps_the_old_ones() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let p = port.to_string();
    let cfg = write(dir.path(), "r.toml", &zone_config(port, "192.0.2.1"));
    let d = spawn(&["--config", &cfg]);
    wait_ready(port);
    let ask = || dig(&["@127.0.0.1", "-p", &p, "www.lb.test", "+short"]);
    assert_eq!(ask().trim(), "192.0.2.1");
    let hup = || unsafe { libc::kill(d.0.id() as i32, libc::SIGHUP) };
    let wait_for = |want: &str| {
        let deadline = Instant::now() + Duration::from_secs(5);
        while ask().trim() != want {
            assert!(Instant::now() < deadline, "answer never became {want}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    write(dir.path(), "r.toml", &zone_config(port, "192.0.2.2"));
    hup();
    wait_for("192.0.2.2");
    // A pool member of the wrong family: rejected, old zones keep serving.
    write(dir.path(), "r.toml", &zone_config(port, "2001:db8::1"));
    hup();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(ask().trim(), "192.0.2.2");
    write(dir.path(), "r.toml", "[server\n");
    hup();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        ask().trim(),
        "192.0.2.2",
        "a syntax error changes nothing either"
    );
}

#[test]
fn check_config_reads_trust_anchor_files() {
    let dir = tempfile::tempdir().unwrap();
    let anchor = write(
        dir.path(),
        "corp.anchor",
        "corp.example. IN DS 12345 13 2 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n",
    );
    let good = write(
        dir.path(),
        "good.toml",
        "[dnssec]\ntrust_anchor_files = [\"corp.anchor\"]\nnegative_trust_anchors = [\"lab.example.\"]\n",
    );
    let out = run(&["check-config", &good]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(std::path::Path::new(&anchor).exists());

    write(dir.path(), "a.anchor", "www.example. IN A 192.0.2.1\n");
    let bad = write(
        dir.path(),
        "bad.toml",
        "[dnssec]\n\ntrust_anchor_files = [\"a.anchor\"]\n",
    );
    let out = run(&["check-config", &bad]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{bad}:3: trust_anchor_files:"))
            && err.contains("not a DS or DNSKEY"),
        "{err}"
    );
    let missing = write(
        dir.path(),
        "missing.toml",
        "[dnssec]\ntrust_anchor_files = [\"nowhere.anchor\"]\n",
    );
    let err = String::from_utf8_lossy(&run(&["check-config", &missing]).stderr).into_owned();
    assert!(
        err.contains("nowhere.anchor") && err.contains("cannot read"),
        "{err}"
    );
    let nta = write(
        dir.path(),
        "nta.toml",
        "[dnssec]\nnegative_trust_anchors = [\"bad..name\"]\n",
    );
    let err = String::from_utf8_lossy(&run(&["check-config", &nta]).stderr).into_owned();
    assert!(err.contains(":2: negative_trust_anchors:"), "{err}");
}
