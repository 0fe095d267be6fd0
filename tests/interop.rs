//! Interop tests: the `resolvd` binary against real software.
//!
//! * NSD serves a small hierarchy (root, `test.`, `example.test.`, `other.`
//!   and `corp.other.`) from the zone files in `tests/interop/`, one `nsd`
//!   process per server, each on its own 127.210.N.x address; resolvd walks it.
//! * Unbound walks the same hierarchy; both must give the same answer RRsets,
//!   and resolvd's TTLs must never exceed the authoritative ones.
//! * glibc (`getent ahosts`) uses resolvd as the system resolver inside a
//!   network namespace created by the test.
//!
//! Each test uses its own 127.210.N.0/24 block (N = 1..7), so they run in
//! parallel. Unbound can only send upstream to port 53, so the tests that
//! use it (and the namespace test) run NSD on port 53 of their own block;
//! the others use a free port. Every process is started in its own process
//! group and stopped by that PID (SIGTERM, then SIGKILL) when its guard is
//! dropped, also when a test panics. Every wait is bounded.
//!
//! Needs the Debian packages nsd, unbound, dnsutils (dig), iproute2 (ip) and
//! libc-bin (getent); a missing one fails the test naming the package. The
//! port-53 and namespace tests need root.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

const ZONE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop");

/// The servers of the hierarchy: host number in the block, zones (name, file).
const SERVERS: [(u8, &[(&str, &str)]); 4] = [
    (1, &[(".", "root.zone")]),
    (2, &[("test.", "test.zone")]),
    (3, &[("example.test.", "example.test.zone")]),
    (
        4,
        &[("other.", "other.zone"), ("corp.other.", "corp.other.zone")],
    ),
];

/// Questions asked of both resolvers in the comparison.
const QUESTIONS: &[(&str, &str)] = &[
    ("www.example.test.", "A"),
    ("www.example.test.", "AAAA"),
    ("example.test.", "MX"),
    ("example.test.", "TXT"),
    ("example.test.", "NS"),
    ("example.test.", "SOA"),
    ("_sip._tcp.example.test.", "SRV"),
    ("alias.example.test.", "A"),
    ("alias.example.test.", "AAAA"),
    ("nope.example.test.", "A"),
    ("www.example.test.", "MX"),
    ("ns1.example.test.", "A"),
    ("web.corp.other.", "AAAA"),
    ("missing.corp.other.", "TXT"),
    ("corp.other.", "NS"),
];

// ---------------------------------------------------------------- tools

#[path = "interop/procs.rs"]
mod procs;
use procs::*;

/// Runs commands either in the test's own network namespace or in a named one.
#[derive(Clone, Default)]
struct Ns(Option<String>);

impl Ns {
    fn command(&self, prog: &Path) -> Command {
        match &self.0 {
            None => Command::new(prog),
            Some(ns) => {
                let mut c = Command::new(tool("ip", "iproute2"));
                c.args(["netns", "exec", ns]).arg(prog);
                c
            }
        }
    }
}

// ---------------------------------------------------------------- dig

#[derive(Debug, Clone)]
struct Rr {
    name: String,
    ttl: u32,
    rtype: String,
    rdata: String,
}

impl Rr {
    /// (name, type, rdata) with case-insensitive names.
    fn key(&self) -> (String, String, String) {
        (self.name.clone(), self.rtype.clone(), self.rdata.clone())
    }
}

#[derive(Debug)]
struct Reply {
    status: String,
    flags: Vec<String>,
    answer: Vec<Rr>,
    authority: Vec<Rr>,
    text: String,
}

impl Reply {
    fn answer_set(&self) -> BTreeSet<(String, String, String)> {
        self.answer.iter().map(Rr::key).collect()
    }
    fn soa(&self) -> Option<&Rr> {
        self.authority.iter().find(|r| r.rtype == "SOA")
    }
}

fn parse_dig(text: &str) -> Reply {
    let mut reply = Reply {
        status: String::new(),
        flags: Vec::new(),
        answer: Vec::new(),
        authority: Vec::new(),
        text: text.to_string(),
    };
    let mut section = 0; // 1 answer, 2 authority
    for line in text.lines() {
        if let Some(i) = line.find("status: ") {
            let rest = &line[i + 8..];
            reply.status = rest.split(',').next().unwrap_or("").trim().to_string();
        } else if let Some(rest) = line.strip_prefix(";; flags:") {
            let flags = rest.split(';').next().unwrap_or("");
            reply.flags = flags.split_whitespace().map(str::to_string).collect();
        } else if line.starts_with(";; ANSWER SECTION") {
            section = 1;
        } else if line.starts_with(";; AUTHORITY SECTION") {
            section = 2;
        } else if line.starts_with(";; ") && line.contains("SECTION") {
            section = 0;
        } else if !line.starts_with(';') && !line.trim().is_empty() && section > 0 {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 5 {
                continue;
            }
            let rtype = f[3].to_ascii_uppercase();
            let mut rdata = f[4..].join(" ");
            if rtype != "TXT" {
                rdata = rdata.to_ascii_lowercase();
            }
            let rr = Rr {
                name: f[0].to_ascii_lowercase(),
                ttl: f[1].parse().unwrap_or(u32::MAX),
                rtype,
                rdata,
            };
            if section == 1 {
                reply.answer.push(rr);
            } else {
                reply.authority.push(rr);
            }
        }
    }
    reply
}

/// `dig @server -p port name type`; panics when no reply arrives.
fn dig(ns: &Ns, server: &str, port: u16, name: &str, qtype: &str, extra: &[&str]) -> Reply {
    let mut cmd = ns.command(&tool("dig", "dnsutils"));
    cmd.arg(format!("@{server}"))
        .args(["-p", &port.to_string(), name, qtype])
        .args([
            "+time=3",
            "+tries=1",
            "+nocookie",
            "+noall",
            "+comments",
            "+answer",
            "+authority",
        ])
        .args(extra);
    let out = run_bounded(cmd, Duration::from_secs(8));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let reply = parse_dig(&text);
    assert!(
        out.status.success() && !reply.status.is_empty(),
        "dig @{server} -p {port} {name} {qtype}: no reply ({}):\n{text}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    reply
}

// ---------------------------------------------------------------- NSD

/// The NSD hierarchy on `NET.1` .. `NET.4`, all on one port.
struct Hierarchy {
    procs: Procs,
    net: String,
    port: u16,
    ns: Ns,
    dir: tempfile::TempDir,
}

impl Hierarchy {
    fn start(net: &str, port: Option<u16>, ns: Ns) -> Hierarchy {
        let nsd = tool("nsd", "nsd");
        tool("nsd-control", "nsd");
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().to_path_buf();
        let addrs: Vec<String> = SERVERS.iter().map(|(h, _)| format!("{net}.{h}")).collect();
        let port = port.unwrap_or_else(|| free_port(&addrs));
        let mut h = Hierarchy {
            procs: Procs::default(),
            net: net.to_string(),
            port,
            ns,
            dir,
        };
        for (host, zones) in SERVERS {
            let mut conf = String::new();
            let _ = write!(
                conf,
                "server:\n    ip-address: {net}.{host}@{port}\n    server-count: 1\n    \
                 username: \"\"\n    chroot: \"\"\n    zonesdir: \"{d}\"\n    database: \"\"\n    \
                 zonelistfile: \"{d}/zone{host}.list\"\n    xfrdfile: \"{d}/xfrd{host}.state\"\n    \
                 xfrdir: \"{d}\"\n    pidfile: \"{d}/nsd{host}.pid\"\n    hide-version: yes\n    \
                 verbosity: 1\n\
                 remote-control:\n    control-enable: yes\n    control-interface: \"{d}/nsd{host}.ctl\"\n",
                d = d.display()
            );
            for (zone, file) in zones {
                let text = fs::read_to_string(Path::new(ZONE_DIR).join(file))
                    .unwrap_or_else(|e| panic!("{ZONE_DIR}/{file}: {e}"));
                let path = d.join(file);
                fs::write(&path, text.replace("NET.", &format!("{net}.")))
                    .expect("write zone file");
                let _ = write!(
                    conf,
                    "zone:\n    name: \"{zone}\"\n    zonefile: \"{}\"\n",
                    path.display()
                );
            }
            let conf_path = d.join(format!("nsd{host}.conf"));
            fs::write(&conf_path, conf).expect("write nsd.conf");
            let mut cmd = h.ns.command(&nsd);
            cmd.arg("-d").arg("-c").arg(&conf_path);
            h.procs.spawn(
                &format!("nsd {net}.{host}"),
                cmd,
                &d.join(format!("nsd{host}.log")),
            );
        }
        fs::write(
            h.hints(),
            format!(
                ".\t3600000\tNS\ta.root-servers.test.\na.root-servers.test.\t3600000\tA\t{net}.1\n"
            ),
        )
        .expect("write root hints");
        // Each server must answer its first zone's SOA authoritatively.
        for (i, (host, zones)) in SERVERS.iter().enumerate() {
            let addr = format!("{net}.{host}");
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut ready = false;
            for _ in 0..100 {
                h.procs.assert_alive(i);
                let mut cmd = h.ns.command(&tool("dig", "dnsutils"));
                cmd.arg(format!("@{addr}")).args([
                    "-p",
                    &port.to_string(),
                    zones[0].0,
                    "SOA",
                    "+norec",
                    "+time=1",
                    "+tries=1",
                ]);
                let out = run_bounded(cmd, Duration::from_secs(5));
                let text = String::from_utf8_lossy(&out.stdout);
                if text.contains("status: NOERROR") && text.contains(" aa") {
                    ready = true;
                    break;
                }
                if Instant::now() > deadline {
                    break;
                }
                sleep(Duration::from_millis(50));
            }
            assert!(
                ready,
                "nsd on {addr}@{port} did not answer {} SOA within 10 s; its log:\n{}",
                zones[0].0,
                h.procs.log_tail(i)
            );
        }
        h
    }

    fn hints(&self) -> PathBuf {
        self.dir.path().join("root.hints")
    }

    /// The address of the server authoritative for `name` (longest zone match).
    fn server_for(&self, name: &str) -> String {
        let name = name.to_ascii_lowercase();
        let mut best: Option<(usize, u8)> = None;
        for (host, zones) in SERVERS {
            for (zone, _) in zones {
                let inside = *zone == "." || name == *zone || name.ends_with(&format!(".{zone}"));
                if inside && best.is_none_or(|(len, _)| zone.len() > len) {
                    best = Some((zone.len(), host));
                }
            }
        }
        format!("{}.{}", self.net, best.map(|b| b.1).unwrap_or(1))
    }

    /// Asks the authoritative server directly (RD=0).
    fn ask_auth(&self, name: &str, qtype: &str) -> Reply {
        let server = self.server_for(name);
        dig(&self.ns, &server, self.port, name, qtype, &["+norec"])
    }

    /// Counters summed over every server (`nsd-control stats_noreset`).
    fn stats(&self) -> BTreeMap<String, u64> {
        let mut sum = BTreeMap::new();
        for (host, _) in SERVERS {
            let mut cmd = self.ns.command(&tool("nsd-control", "nsd"));
            cmd.arg("-c")
                .arg(self.dir.path().join(format!("nsd{host}.conf")))
                .arg("stats_noreset");
            let out = run_bounded(cmd, Duration::from_secs(5));
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "nsd-control stats on {}.{host}: {text}{}",
                self.net,
                String::from_utf8_lossy(&out.stderr)
            );
            for line in text.lines() {
                if let Some((k, v)) = line.split_once('=') {
                    if let Ok(v) = v.trim().parse::<u64>() {
                        *sum.entry(k.to_string()).or_insert(0) += v;
                        if k == "num.queries" {
                            sum.insert(format!("server {}.{host}", self.net), v);
                        }
                    }
                }
            }
        }
        sum
    }
}

/// Query counters (total, per server, per type) added since `before`.
fn stats_delta(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> String {
    let mut parts = Vec::new();
    for (k, v) in after {
        let d = v - before.get(k).copied().unwrap_or(0);
        if d > 0 && (k.starts_with("num.type.") || k.starts_with("server ")) {
            parts.push(format!("{}={d}", k.trim_start_matches("num.type.")));
        }
    }
    parts.join(" ")
}

// ---------------------------------------------------------------- resolvers

/// A resolver process (resolvd or unbound) listening on `addr:port`.
struct Resolver {
    procs: Procs,
    addr: String,
    port: u16,
    ns: Ns,
    dir: tempfile::TempDir,
}

impl Resolver {
    fn resolvd(h: &Hierarchy, listen_port: Option<u16>) -> Resolver {
        let dir = tempfile::tempdir().expect("tempdir");
        let addr = "127.0.0.1".to_string();
        let port = listen_port.unwrap_or_else(|| free_port(std::slice::from_ref(&addr)));
        let conf = dir.path().join("resolvd.toml");
        fs::write(
            &conf,
            format!(
                "[server]\nlisten = [\"{addr}:{port}\"]\nthreads = 1\nshutdown_grace = \"100ms\"\n\
                 [resolver]\nroot_hints = \"{}\"\nquery_loopback = true\nupstream_port = {}\n\
                 special_use_exclude = [\"test.\"]\n[dnssec]\nvalidation = false\n\
                 [control]\nenabled = true\nsocket = \"{}\"\n[log]\nlevel = \"info\"\n",
                h.hints().display(),
                h.port,
                dir.path().join("control.sock").display()
            ),
        )
        .expect("write resolvd.toml");
        let mut r = Resolver {
            procs: Procs::default(),
            addr,
            port,
            ns: h.ns.clone(),
            dir,
        };
        let mut cmd = r.ns.command(Path::new(env!("CARGO_BIN_EXE_resolvd")));
        cmd.arg("--config").arg(&conf).env_remove("RUST_LOG");
        let i = r
            .procs
            .spawn("resolvd", cmd, &r.dir.path().join("resolvd.log"));
        r.procs.wait_for_log(i, "listening on");
        r
    }

    fn unbound(h: &Hierarchy) -> Resolver {
        let unbound = tool("unbound", "unbound");
        assert_eq!(h.port, 53, "unbound only queries port 53 upstream");
        let dir = tempfile::tempdir().expect("tempdir");
        let addr = "127.0.0.1".to_string();
        let port = free_port(std::slice::from_ref(&addr));
        let d = dir.path().display().to_string();
        let conf = dir.path().join("unbound.conf");
        fs::write(
            &conf,
            format!(
                "server:\n    interface: {addr}@{port}\n    port: {port}\n    username: \"\"\n    \
                 chroot: \"\"\n    directory: \"{d}\"\n    pidfile: \"{d}/unbound.pid\"\n    \
                 use-syslog: no\n    logfile: \"\"\n    verbosity: 1\n    num-threads: 1\n    \
                 module-config: \"iterator\"\n    root-hints: \"{}\"\n    \
                 do-not-query-localhost: no\n    do-ip6: no\n    qname-minimisation: yes\n    \
                 access-control: 127.0.0.0/8 allow\n    local-zone: \"test.\" nodefault\n    \
                 prefetch: no\n    extended-statistics: yes\n\
                 remote-control:\n    control-enable: yes\n    control-interface: \"{d}/unbound.ctl\"\n",
                h.hints().display()
            ),
        )
        .expect("write unbound.conf");
        let mut r = Resolver {
            procs: Procs::default(),
            addr,
            port,
            ns: h.ns.clone(),
            dir,
        };
        let mut cmd = r.ns.command(&unbound);
        cmd.arg("-d").arg("-c").arg(&conf);
        let i = r
            .procs
            .spawn("unbound", cmd, &r.dir.path().join("unbound.log"));
        r.procs.wait_for_log(i, "start of service");
        r
    }

    fn ask(&self, name: &str, qtype: &str) -> Reply {
        dig(&self.ns, &self.addr, self.port, name, qtype, &[])
    }

    /// `resolvd control stats` as key → value.
    fn resolvd_stats(&self) -> BTreeMap<String, String> {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_resolvd"));
        cmd.arg("control")
            .arg("--socket")
            .arg(self.dir.path().join("control.sock"))
            .arg("stats");
        let out = run_bounded(cmd, Duration::from_secs(5));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(k, v)| (k.to_string(), v.trim().to_string()))
            .collect()
    }
}

// ---------------------------------------------------------------- checks

type Expected<'a> = &'a [(&'a str, &'a str, &'a str, u32)];

/// The answer section is exactly `want` (name, type, rdata), each TTL at
/// most the zone's.
fn assert_answer(reply: &Reply, want: Expected) {
    assert_eq!(reply.status, "NOERROR", "status; reply:\n{}", reply.text);
    assert!(
        reply.flags.iter().any(|f| f == "ra"),
        "RA not set; reply:\n{}",
        reply.text
    );
    let want_set: BTreeSet<_> = want
        .iter()
        .map(|(n, t, d, _)| (n.to_string(), t.to_string(), d.to_string()))
        .collect();
    assert_eq!(
        reply.answer_set(),
        want_set,
        "answer section differs; reply:\n{}",
        reply.text
    );
    for rr in &reply.answer {
        let max = want
            .iter()
            .find(|(n, t, d, _)| (*n, *t, *d) == (&rr.name, &rr.rtype, &rr.rdata))
            .map(|w| w.3)
            .unwrap_or(0);
        assert!(
            rr.ttl <= max,
            "{} {} TTL {} exceeds the zone's {max}; reply:\n{}",
            rr.name,
            rr.rtype,
            rr.ttl,
            reply.text
        );
    }
}

/// A negative answer: `status`, empty answer, the zone's SOA in authority
/// with a TTL of at most min(SOA TTL, MINIMUM).
fn assert_negative(reply: &Reply, status: &str, zone: &str, max_ttl: u32) {
    assert_eq!(reply.status, status, "status; reply:\n{}", reply.text);
    assert!(
        reply.answer.is_empty(),
        "answer should be empty; reply:\n{}",
        reply.text
    );
    let soa = reply
        .soa()
        .unwrap_or_else(|| panic!("no SOA in the authority section; reply:\n{}", reply.text));
    assert_eq!(soa.name, zone, "SOA owner; reply:\n{}", reply.text);
    assert!(
        soa.ttl <= max_ttl,
        "negative TTL {} exceeds {max_ttl}; reply:\n{}",
        soa.ttl,
        reply.text
    );
}

/// Asks twice (cold, then from the cache) and checks both replies.
fn ask_twice(r: &Resolver, name: &str, qtype: &str, check: impl Fn(&Reply)) {
    for _ in 0..2 {
        check(&r.ask(name, qtype));
    }
}

// ---------------------------------------------------------------- 1: NSD

#[test]
fn nsd_hierarchy_positive_answers_for_every_type() {
    let h = Hierarchy::start("127.210.1", None, Ns::default());
    let r = Resolver::resolvd(&h, None);
    let cases: &[(&str, &str, Expected)] = &[
        (
            "www.example.test.",
            "A",
            &[
                ("www.example.test.", "A", "192.0.2.10", 300),
                ("www.example.test.", "A", "192.0.2.11", 300),
            ],
        ),
        (
            "www.example.test.",
            "AAAA",
            &[("www.example.test.", "AAAA", "2001:db8::10", 300)],
        ),
        (
            "example.test.",
            "MX",
            &[
                ("example.test.", "MX", "10 mail.example.test.", 3600),
                ("example.test.", "MX", "20 mx2.corp.other.", 3600),
            ],
        ),
        (
            "example.test.",
            "TXT",
            &[
                ("example.test.", "TXT", "\"v=spf1 mx -all\"", 3600),
                (
                    "example.test.",
                    "TXT",
                    "\"interop test zone\" \"two strings\"",
                    3600,
                ),
            ],
        ),
        (
            // The child's NS set (TTL 3600), not the parent's delegation (172800).
            "example.test.",
            "NS",
            &[("example.test.", "NS", "ns1.example.test.", 3600)],
        ),
        (
            "example.test.",
            "SOA",
            &[(
                "example.test.",
                "SOA",
                "ns1.example.test. hostmaster.example.test. 2024010101 1800 900 604800 300",
                3600,
            )],
        ),
        (
            "_sip._tcp.example.test.",
            "SRV",
            &[
                (
                    "_sip._tcp.example.test.",
                    "SRV",
                    "10 60 5060 sip.example.test.",
                    600,
                ),
                (
                    "_sip._tcp.example.test.",
                    "SRV",
                    "20 40 5061 sip2.corp.other.",
                    600,
                ),
            ],
        ),
        (
            // In-bailiwick glue has TTL 172800 in test.; the answer is the child's.
            "ns1.example.test.",
            "A",
            &[("ns1.example.test.", "A", "127.210.1.3", 3600)],
        ),
    ];
    for (name, qtype, want) in cases {
        ask_twice(&r, name, qtype, |reply| assert_answer(reply, want));
    }
}

#[test]
fn nsd_hierarchy_cname_chain_crosses_to_other_tld() {
    let h = Hierarchy::start("127.210.2", None, Ns::default());
    let r = Resolver::resolvd(&h, None);
    let chain = [
        ("alias.example.test.", "CNAME", "www.corp.other.", 600),
        ("www.corp.other.", "CNAME", "web.corp.other.", 1200),
    ];
    let mut want_a = chain.to_vec();
    want_a.push(("web.corp.other.", "A", "198.51.100.80", 900));
    ask_twice(&r, "alias.example.test.", "A", |reply| {
        assert_answer(reply, &want_a);
        // The chain is in order: each link's target is the next owner.
        let owners: Vec<&str> = reply.answer.iter().map(|rr| rr.name.as_str()).collect();
        assert_eq!(
            owners,
            ["alias.example.test.", "www.corp.other.", "web.corp.other."],
            "CNAME chain order; reply:\n{}",
            reply.text
        );
    });
    let mut want_aaaa = chain.to_vec();
    want_aaaa.push(("web.corp.other.", "AAAA", "2001:db8:1::80", 900));
    ask_twice(&r, "alias.example.test.", "AAAA", |reply| {
        assert_answer(reply, &want_aaaa)
    });
}

#[test]
fn nsd_hierarchy_nxdomain_carries_soa() {
    let h = Hierarchy::start("127.210.3", None, Ns::default());
    let r = Resolver::resolvd(&h, None);
    // example.test. SOA: TTL 3600, MINIMUM 300 → negative TTL ≤ 300.
    ask_twice(&r, "nope.example.test.", "A", |reply| {
        assert_negative(reply, "NXDOMAIN", "example.test.", 300)
    });
    // corp.other. SOA: TTL 1800, MINIMUM 120.
    ask_twice(&r, "missing.corp.other.", "TXT", |reply| {
        assert_negative(reply, "NXDOMAIN", "corp.other.", 120)
    });
    // A whole TLD that does not exist: the root's SOA (MINIMUM 86400).
    ask_twice(&r, "nothing.invalid-tld.", "A", |reply| {
        assert_negative(reply, "NXDOMAIN", ".", 86400)
    });
}

#[test]
fn nsd_hierarchy_nodata_carries_soa() {
    let h = Hierarchy::start("127.210.4", None, Ns::default());
    let r = Resolver::resolvd(&h, None);
    ask_twice(&r, "www.example.test.", "MX", |reply| {
        assert_negative(reply, "NOERROR", "example.test.", 300)
    });
    ask_twice(&r, "mail.example.test.", "AAAA", |reply| {
        assert_negative(reply, "NOERROR", "example.test.", 300)
    });
    ask_twice(&r, "web.corp.other.", "TXT", |reply| {
        assert_negative(reply, "NOERROR", "corp.other.", 120)
    });
}

// ---------------------------------------------------------------- 2: Unbound

#[test]
fn answers_and_ttls_match_unbound() {
    let h = Hierarchy::start("127.210.5", Some(53), Ns::default());
    let r = Resolver::resolvd(&h, None);
    let u = Resolver::unbound(&h);
    let mut failures = Vec::new();
    for (name, qtype) in QUESTIONS {
        let ub = u.ask(name, qtype);
        for round in ["cold", "cached"] {
            let rv = r.ask(name, qtype);
            let q = format!("{name} {qtype} ({round})");
            if rv.status != ub.status {
                failures.push(format!(
                    "{q}: status resolvd {} vs unbound {}",
                    rv.status, ub.status
                ));
            }
            if rv.answer_set() != ub.answer_set() {
                failures.push(format!(
                    "{q}: answer RRsets differ\n--- resolvd:\n{}--- unbound:\n{}",
                    rv.text, ub.text
                ));
            }
            // Every answer record's TTL ≤ what its authoritative server says.
            for rr in &rv.answer {
                let auth = h.ask_auth(&rr.name, &rr.rtype);
                match auth.answer.iter().find(|a| a.key() == rr.key()) {
                    Some(a) if rr.ttl <= a.ttl => {}
                    Some(a) => failures.push(format!(
                        "{q}: {} {} {} TTL {} > authoritative {}",
                        rr.name, rr.rtype, rr.rdata, rr.ttl, a.ttl
                    )),
                    None => failures.push(format!(
                        "{q}: {} {} {} not served by its authoritative server:\n{}",
                        rr.name, rr.rtype, rr.rdata, auth.text
                    )),
                }
            }
            // Negative answers: the SOA and its TTL against the authoritative one.
            if rv.answer.is_empty() {
                let auth = h.ask_auth(name, qtype);
                match (rv.soa(), auth.soa(), ub.soa()) {
                    (Some(s), Some(a), Some(b)) => {
                        if s.key() != a.key() || s.key() != b.key() {
                            failures.push(format!(
                                "{q}: SOA differs: resolvd {s:?}, unbound {b:?}, authoritative {a:?}"
                            ));
                        }
                        if s.ttl > a.ttl {
                            failures.push(format!(
                                "{q}: negative SOA TTL {} > authoritative {}",
                                s.ttl, a.ttl
                            ));
                        }
                    }
                    _ => failures.push(format!(
                        "{q}: negative answer without SOA\n--- resolvd:\n{}--- unbound:\n{}--- authoritative:\n{}",
                        rv.text, ub.text, auth.text
                    )),
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} difference(s) between resolvd and unbound:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[test]
fn cold_lookup_upstream_query_count_vs_unbound() {
    let h = Hierarchy::start("127.210.6", Some(53), Ns::default());

    let before = h.stats();
    let r = Resolver::resolvd(&h, None);
    let reply = r.ask("www.example.test.", "A");
    assert_eq!(reply.answer.len(), 2, "resolvd's answer:\n{}", reply.text);
    sleep(Duration::from_millis(500)); // let background work (if any) finish
    let after = h.stats();
    let resolvd_n = after["num.queries"] - before["num.queries"];
    let resolvd_detail = stats_delta(&before, &after);
    let own = r.resolvd_stats();
    drop(r);

    let before = h.stats();
    let u = Resolver::unbound(&h);
    let reply = u.ask("www.example.test.", "A");
    assert_eq!(reply.answer.len(), 2, "unbound's answer:\n{}", reply.text);
    sleep(Duration::from_millis(500));
    let after = h.stats();
    let unbound_n = after["num.queries"] - before["num.queries"];
    let unbound_detail = stats_delta(&before, &after);
    drop(u);

    eprintln!(
        "cold www.example.test A, queries seen by the NSD servers:\n  \
         resolvd: {resolvd_n} ({resolvd_detail}); resolvd's own upstream_queries counter: {}\n  \
         unbound: {unbound_n} ({unbound_detail})",
        own.get("upstream_queries")
            .map(String::as_str)
            .unwrap_or("?")
    );
    // Root priming + one question per zone cut is 4; QNAME minimisation may add a few.
    assert!(
        resolvd_n >= 3,
        "resolvd cannot have resolved with {resolvd_n} queries"
    );
    assert!(
        resolvd_n <= unbound_n + 3,
        "resolvd sent {resolvd_n} upstream queries for a cold www.example.test A, \
         unbound {unbound_n}: resolvd [{resolvd_detail}] unbound [{unbound_detail}]"
    );
}

// ---------------------------------------------------------------- 3: glibc

/// A network namespace and its /etc/netns directory, removed on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn create() -> Netns {
        let ip = tool("ip", "iproute2");
        let name = format!("rsvd{}", std::process::id());
        let out = run_bounded(
            {
                let mut c = Command::new(&ip);
                c.args(["netns", "add", &name]);
                c
            },
            Duration::from_secs(10),
        );
        assert!(
            out.status.success(),
            "cannot create network namespace {name} (`ip netns add` needs root / CAP_SYS_ADMIN): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        let ns = Netns { name };
        let out = run_bounded(
            {
                let mut c = Command::new(&ip);
                c.args(["-n", &ns.name, "link", "set", "lo", "up"]);
                c
            },
            Duration::from_secs(10),
        );
        assert!(
            out.status.success(),
            "cannot bring lo up in {}: {}",
            ns.name,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        let etc = ns.etc_dir();
        fs::create_dir_all(&etc).unwrap_or_else(|e| panic!("{}: {e}", etc.display()));
        fs::write(
            etc.join("resolv.conf"),
            "nameserver 127.0.0.1\noptions timeout:3 attempts:1\n",
        )
        .unwrap_or_else(|e| panic!("{}/resolv.conf: {e}", etc.display()));
        ns
    }

    fn etc_dir(&self) -> PathBuf {
        Path::new("/etc/netns").join(&self.name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new(tool("ip", "iproute2"))
            .args(["netns", "del", &self.name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = fs::remove_dir_all(self.etc_dir());
        // Leave /etc/netns itself only if something else uses it.
        let _ = fs::remove_dir("/etc/netns");
    }
}

/// A UDP reply larger than the interface allows (replies carry DF, so the
/// kernel will not fragment it) goes out as TC=1, and the client gets the
/// whole answer over TCP; without that it would get nothing.
#[test]
fn a_udp_reply_too_big_for_the_interface_goes_out_truncated() {
    let ip = tool("ip", "iproute2");
    let netns = Netns::create(); // dropped last: after resolvd inside it
    let ns = Ns(Some(netns.name.clone()));
    let out = run_bounded(
        {
            let mut c = Command::new(&ip);
            c.args(["-n", &netns.name, "link", "set", "lo", "mtu", "1280"]);
            c
        },
        Duration::from_secs(10),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = tempfile::tempdir().expect("tempdir");
    // Eight 200-byte strings: a reply of about 1,700 bytes.
    let strings: Vec<String> = (0..8)
        .map(|i| format!("\"{}\"", char::from(b'a' + i).to_string().repeat(200)))
        .collect();
    fs::write(
        dir.path().join("big.test.zone"),
        format!(
            "$ORIGIN big.test.\n$TTL 60\n@ SOA ns hostmaster 1 3600 600 86400 60\n\
             @ NS ns\nns A 127.0.0.1\ntxt TXT {}\n",
            strings.join(" ")
        ),
    )
    .expect("zone file");
    let conf = dir.path().join("resolvd.toml");
    fs::write(
        &conf,
        format!(
            "[server]\nlisten = [\"127.0.0.1:53\"]\nthreads = 1\nudp_payload_size = 4096\n\
             shutdown_grace = \"100ms\"\n[dnssec]\nvalidation = false\n\
             [control]\nsocket = \"{}\"\n[log]\nlevel = \"info\"\n\
             [[zone]]\norigin = \"big.test.\"\nfile = \"{}\"\n",
            dir.path().join("control.sock").display(),
            dir.path().join("big.test.zone").display()
        ),
    )
    .expect("resolvd.toml");
    let mut procs = Procs::default();
    let mut cmd = ns.command(Path::new(env!("CARGO_BIN_EXE_resolvd")));
    cmd.arg("--config").arg(&conf).env_remove("RUST_LOG");
    let i = procs.spawn("resolvd", cmd, &dir.path().join("resolvd.log"));
    procs.wait_for_log(i, "listening on");

    // +ignore: dig reports the truncated reply instead of retrying.
    let udp = dig(
        &ns,
        "127.0.0.1",
        53,
        "txt.big.test",
        "TXT",
        &["+bufsize=4096", "+ignore"],
    );
    assert!(
        udp.flags.iter().any(|f| f == "tc") && udp.answer.is_empty(),
        "a TC=1 reply with no answer over UDP:\n{}",
        udp.text
    );
    let tcp = dig(&ns, "127.0.0.1", 53, "txt.big.test", "TXT", &["+tcp"]);
    assert_eq!(tcp.answer.len(), 1, "the whole TXT over TCP:\n{}", tcp.text);
    assert!(
        tcp.answer[0].rdata.contains(&"h".repeat(200)),
        "{}",
        tcp.text
    );
    drop(procs);
}

#[test]
fn glibc_getent_resolves_through_resolvd_in_netns() {
    let getent = tool("getent", "libc-bin");
    let netns = Netns::create(); // dropped last: after the processes inside it
    let ns = Ns(Some(netns.name.clone()));
    let h = Hierarchy::start("127.210.7", Some(53), ns.clone());
    let r = Resolver::resolvd(&h, Some(53));

    let mut cmd = ns.command(&getent);
    cmd.args(["ahosts", "www.example.test"]);
    let out = run_bounded(cmd, Duration::from_secs(15));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let got: BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let want: BTreeSet<&str> = ["192.0.2.10", "192.0.2.11", "2001:db8::10"].into();
    assert!(
        out.status.success() && got == want,
        "getent ahosts www.example.test in netns {}: {}, addresses {got:?}, want {want:?}\n\
         stdout:\n{text}stderr:\n{}\nresolvd log:\n{}",
        netns.name,
        out.status,
        String::from_utf8_lossy(&out.stderr),
        r.procs.log_tail(0)
    );
    drop(r);
    drop(h);
}
