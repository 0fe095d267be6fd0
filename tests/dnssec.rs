//! DNSSEC validation against zones signed by a standard signer and served
//! by a real authoritative server: ldns-keygen/ldns-signzone (Debian
//! `ldnsutils`) sign a root, `test.` and one child zone per case; NSD
//! serves them all from 127.220.0.1; resolvd (in-process) validates from
//! the test root's key as its only trust anchor; `dig` asks.
//!
//! Each case is a zone under `test.`: `secure` (NSEC), `nsec3` (NSEC3),
//! `insecure` (no DS), `bogus` (a record changed after signing),
//! `expired` (signatures from 2020), `badds` (the DS matches no key),
//! `iter` (NSEC3 with 500 iterations, RFC 9276).
//!
//! Needs nsd, ldnsutils and dnsutils; a missing one fails naming it.

#[path = "interop/procs.rs"]
mod procs;

use procs::{free_port, run_bounded, tool, Procs};
use resolvd::config::Config;
use resolvd::daemon::Daemon;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const NET: &str = "127.220.0.1";

/// Child zones: (label, signing arguments, what happens after signing).
const CHILDREN: &[(&str, &[&str])] = &[
    ("secure", &[]),
    ("nsec3", &["-n", "-t", "0"]),
    ("insecure", &[]),
    ("bogus", &[]),
    ("expired", &["-i", "20200101000000", "-e", "20200201000000"]),
    ("badds", &[]),
    ("iter", &["-n", "-t", "500", "-s", "abcd"]),
];

fn sh(cmd: Command) -> String {
    let out = run_bounded(cmd, Duration::from_secs(60));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Makes a KSK and a ZSK for `origin` in `dir`; returns their base names
/// and the KSK's DS record.
fn keys(dir: &Path, origin: &str) -> (String, String, String) {
    let keygen = tool("ldns-keygen", "ldnsutils");
    let mut k = Command::new(&keygen);
    k.current_dir(dir)
        .args(["-a", "ECDSAP256SHA256", "-k", origin]);
    let ksk = sh(k);
    let mut z = Command::new(&keygen);
    z.current_dir(dir).args(["-a", "ECDSAP256SHA256", origin]);
    let zsk = sh(z);
    let ds = fs::read_to_string(dir.join(format!("{ksk}.ds"))).expect("DS file");
    (ksk, zsk, ds.trim().to_string())
}

fn sign(dir: &Path, file: &str, origin: &str, extra: &[&str], ksk: &str, zsk: &str) -> String {
    let mut c = Command::new(tool("ldns-signzone", "ldnsutils"));
    c.current_dir(dir).args(extra).args([
        "-o",
        origin,
        "-f",
        &format!("{file}.signed"),
        file,
        zsk,
        ksk,
    ]);
    sh(c);
    format!("{file}.signed")
}

fn child_zone(label: &str) -> String {
    format!(
        "$ORIGIN {label}.test.\n$TTL 300\n@ SOA ns.test. h.test. 1 3600 600 86400 300\n\
         @ NS ns.test.\nwww A 192.0.2.1\nmail A 192.0.2.2\nalias CNAME www\n\
         *.wild A 192.0.2.3\n"
    )
}

/// A signed hierarchy served by NSD; returns the root anchor file.
struct Hierarchy {
    _dir: tempfile::TempDir,
    _procs: Procs,
    port: u16,
    hints: String,
    anchor: String,
}

fn start_hierarchy() -> Hierarchy {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let mut zones: Vec<(String, String)> = Vec::new();
    let mut parent_extra = String::new();
    for (label, args) in CHILDREN {
        let origin = format!("{label}.test.");
        let file = format!("{label}.zone");
        fs::write(d.join(&file), child_zone(label)).expect("write zone");
        parent_extra.push_str(&format!("{label} NS ns.test.\n"));
        if *label == "insecure" {
            zones.push((origin, file));
            continue;
        }
        let (ksk, zsk, ds) = keys(d, &origin);
        let signed = sign(d, &file, &origin, args, &ksk, &zsk);
        if *label == "bogus" {
            let text = fs::read_to_string(d.join(&signed)).expect("signed zone");
            let tampered = text.replacen("192.0.2.1", "192.0.2.66", 1);
            assert_ne!(text, tampered);
            fs::write(d.join(&signed), tampered).expect("tamper");
        }
        let ds = if *label == "badds" {
            // The DS of a key the zone does not publish.
            keys(d, &origin).2
        } else {
            ds
        };
        parent_extra.push_str(&format!("{ds}\n"));
        zones.push((origin, signed));
    }
    fs::write(
        d.join("test.zone"),
        format!(
            "$ORIGIN test.\n$TTL 300\n@ SOA ns.test. h.test. 1 3600 600 86400 300\n\
             @ NS ns.test.\nns A {NET}\n{parent_extra}"
        ),
    )
    .expect("write test.");
    let (ksk, zsk, ds) = keys(d, "test.");
    zones.push((
        "test.".into(),
        sign(d, "test.zone", "test.", &[], &ksk, &zsk),
    ));
    fs::write(
        d.join("root.zone"),
        format!(
            "$ORIGIN .\n$TTL 300\n. SOA ns.test. h.test. 1 3600 600 86400 300\n\
             . NS ns.test.\ntest. NS ns.test.\nns.test. A {NET}\n{ds}\n"
        ),
    )
    .expect("write root");
    let (ksk, zsk, root_ds) = keys(d, ".");
    zones.push((".".into(), sign(d, "root.zone", ".", &[], &ksk, &zsk)));
    let anchor = d.join("root.anchor");
    fs::write(&anchor, format!("{root_ds}\n")).expect("anchor");

    let port = free_port(&[NET.to_string()]);
    let mut conf = format!(
        "server:\n  ip-address: {NET}@{port}\n  zonesdir: \"{}\"\n  pidfile: \"\"\n  \
         database: \"\"\n  username: \"\"\n  xfrdfile: \"{}/xfrd.state\"\n  \
         zonelistfile: \"{}/zone.list\"\n  server-count: 1\n  verbosity: 1\n\
         remote-control:\n  control-enable: no\n",
        d.display(),
        d.display(),
        d.display()
    );
    for (origin, file) in &zones {
        conf.push_str(&format!(
            "zone:\n  name: \"{origin}\"\n  zonefile: \"{file}\"\n"
        ));
    }
    fs::write(d.join("nsd.conf"), conf).expect("nsd.conf");
    let mut procs = Procs::default();
    let mut c = Command::new(tool("nsd", "nsd"));
    c.args(["-d", "-c"]).arg(d.join("nsd.conf"));
    let i = procs.spawn("nsd", c, &d.join("nsd.log"));
    procs.wait_for_log(i, "nsd started");
    let hints = d.join("root.hints");
    fs::write(
        &hints,
        format!(". 3600000 NS ns.test.\nns.test. 3600000 A {NET}\n"),
    )
    .expect("hints");
    Hierarchy {
        port,
        hints: hints.display().to_string(),
        anchor: anchor.display().to_string(),
        _procs: procs,
        _dir: dir,
    }
}

async fn resolver(h: &Hierarchy, extra: impl FnOnce(&mut Config)) -> Daemon {
    let mut cfg = Config::embedded_default();
    cfg.server.listen = vec!["127.0.0.1:0".parse().unwrap()];
    cfg.server.threads = 2;
    cfg.control.enabled = false;
    cfg.resolver.root_hints = Some(h.hints.clone().into());
    cfg.resolver.query_loopback = true;
    cfg.resolver.upstream_port = h.port;
    cfg.resolver.special_use_exclude = vec!["test.".into()];
    cfg.dnssec.validation = true;
    cfg.dnssec.trust_anchor_files = vec![h.anchor.clone()];
    extra(&mut cfg);
    Daemon::start(&cfg).await.expect("resolvd starts")
}

/// What dig printed, reduced to what the tests look at.
#[derive(Debug)]
struct Reply {
    status: String,
    flags: Vec<String>,
    ede: Option<u16>,
    answer: Vec<String>,
    authority: Vec<String>,
    text: String,
}

async fn dig(d: &Daemon, name: &str, qtype: &str, opts: &[&str]) -> Reply {
    let addr = d.local_addrs()[0];
    let mut c = Command::new(tool("dig", "dnsutils"));
    c.arg(format!("@{}", addr.ip()))
        .args(["-p", &addr.port().to_string(), "+time=5", "+tries=1"])
        .args(opts)
        .args([name, qtype]);
    let out = tokio::task::spawn_blocking(move || run_bounded(c, Duration::from_secs(20)))
        .await
        .expect("dig");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let status = text
        .split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or("")
        .to_string();
    let flags = text
        .split(";; flags: ")
        .nth(1)
        .and_then(|s| s.split(';').next())
        .map(|s| s.split_whitespace().map(String::from).collect())
        .unwrap_or_default();
    let ede = text.split("; EDE: ").nth(1).and_then(|s| {
        let digits: String = s.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    });
    let section = |title: &str| -> Vec<String> {
        text.split(title)
            .nth(1)
            .map(|s| {
                s.lines()
                    .skip(1)
                    .take_while(|l| !l.trim().is_empty())
                    .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
                    .collect()
            })
            .unwrap_or_default()
    };
    Reply {
        status,
        flags,
        ede,
        answer: section(";; ANSWER SECTION:"),
        authority: section(";; AUTHORITY SECTION:"),
        text,
    }
}

fn has_type(rrs: &[String], t: &str) -> bool {
    rrs.iter().any(|l| l.split_whitespace().nth(3) == Some(t))
}

fn ad(r: &Reply) -> bool {
    r.flags.iter().any(|f| f == "ad")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_hierarchy_validates_like_a_validating_resolver() {
    let h = start_hierarchy();
    let d = resolver(&h, |_| {}).await;

    // Secure positive answer: AD, and RRSIGs only for DO clients.
    let r = dig(&d, "www.secure.test.", "A", &["+dnssec"]).await;
    assert_eq!(r.status, "NOERROR", "{}", r.text);
    assert!(ad(&r), "secure answer without AD: {}", r.text);
    assert!(
        has_type(&r.answer, "RRSIG"),
        "DO client gets RRSIGs: {}",
        r.text
    );
    let r = dig(&d, "www.secure.test.", "A", &["+noadflag"]).await;
    assert!(
        !ad(&r),
        "AD only for clients that ask (DO or AD): {}",
        r.text
    );
    assert!(
        !has_type(&r.answer, "RRSIG"),
        "no RRSIG without DO: {}",
        r.text
    );
    assert!(has_type(&r.answer, "A"), "{}", r.text);
    let r = dig(&d, "www.secure.test.", "A", &["+adflag"]).await;
    assert!(
        ad(&r),
        "AD=1 in the query asks for AD (RFC 6840 §5.7): {}",
        r.text
    );

    // Secure NXDOMAIN and NODATA with NSEC; a CNAME chain; a wildcard.
    let r = dig(&d, "nope.secure.test.", "A", &["+dnssec"]).await;
    assert_eq!(r.status, "NXDOMAIN", "{}", r.text);
    assert!(ad(&r), "{}", r.text);
    assert!(has_type(&r.authority, "NSEC"), "{}", r.text);
    let r = dig(&d, "nope.secure.test.", "A", &[]).await;
    assert!(
        !has_type(&r.authority, "NSEC"),
        "no NSEC without DO: {}",
        r.text
    );
    let r = dig(&d, "www.secure.test.", "MX", &["+dnssec"]).await;
    assert_eq!(r.status, "NOERROR", "{}", r.text);
    assert!(r.answer.is_empty() && ad(&r), "{}", r.text);
    let r = dig(&d, "alias.secure.test.", "A", &["+dnssec"]).await;
    assert!(ad(&r) && has_type(&r.answer, "CNAME"), "{}", r.text);
    let r = dig(&d, "x.wild.secure.test.", "A", &["+dnssec"]).await;
    assert!(ad(&r) && has_type(&r.answer, "A"), "wildcard: {}", r.text);

    // NSEC3.
    let r = dig(&d, "www.nsec3.test.", "A", &["+dnssec"]).await;
    assert!(ad(&r), "{}", r.text);
    let r = dig(&d, "nope.nsec3.test.", "A", &["+dnssec"]).await;
    assert_eq!(r.status, "NXDOMAIN", "{}", r.text);
    assert!(ad(&r) && has_type(&r.authority, "NSEC3"), "{}", r.text);
    let r = dig(&d, "www.nsec3.test.", "MX", &["+dnssec"]).await;
    assert!(ad(&r) && r.answer.is_empty(), "{}", r.text);

    // Insecure: a delegation without DS, proven by the parent's NSEC.
    let r = dig(&d, "www.insecure.test.", "A", &["+dnssec"]).await;
    assert_eq!(r.status, "NOERROR", "{}", r.text);
    assert!(!ad(&r) && has_type(&r.answer, "A"), "{}", r.text);

    // Bogus: SERVFAIL with EDE 6; CD=1 gets the data without AD.
    let r = dig(&d, "www.bogus.test.", "A", &["+dnssec"]).await;
    assert_eq!(r.status, "SERVFAIL", "{}", r.text);
    assert_eq!(r.ede, Some(6), "{}", r.text);
    let r = dig(&d, "www.bogus.test.", "A", &["+dnssec", "+cd"]).await;
    assert_eq!(r.status, "NOERROR", "{}", r.text);
    assert!(!ad(&r), "{}", r.text);
    assert!(
        r.answer.iter().any(|l| l.contains("192.0.2.66")),
        "{}",
        r.text
    );
    // Unchanged records of the bogus zone still validate.
    let r = dig(&d, "mail.bogus.test.", "A", &["+dnssec"]).await;
    assert!(ad(&r), "{}", r.text);

    // Expired signatures: EDE 7.
    let r = dig(&d, "www.expired.test.", "A", &["+dnssec"]).await;
    assert_eq!(r.status, "SERVFAIL", "{}", r.text);
    assert_eq!(r.ede, Some(7), "{}", r.text);
    let r = dig(&d, "www.expired.test.", "A", &["+cd"]).await;
    assert_eq!(r.status, "NOERROR", "{}", r.text);

    // A DS that matches no DNSKEY: EDE 9.
    let r = dig(&d, "www.badds.test.", "A", &["+dnssec"]).await;
    assert_eq!(r.status, "SERVFAIL", "{}", r.text);
    assert_eq!(r.ede, Some(9), "{}", r.text);

    // NSEC3 with 500 iterations: signatures verify, but the denial is
    // insecure (RFC 9276 §3.2) with EDE 27.
    let r = dig(&d, "nope.iter.test.", "A", &["+dnssec"]).await;
    assert_eq!(r.status, "NXDOMAIN", "{}", r.text);
    assert!(!ad(&r), "{}", r.text);
    assert_eq!(r.ede, Some(27), "{}", r.text);
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_trust_anchor_and_validation_off_answer_bogus_zones() {
    let h = start_hierarchy();
    let d = resolver(&h, |c| {
        c.dnssec.negative_trust_anchors = vec!["bogus.test.".into()];
    })
    .await;
    let r = dig(&d, "www.bogus.test.", "A", &["+dnssec"]).await;
    assert_eq!(r.status, "NOERROR", "NTA: {}", r.text);
    assert!(!ad(&r), "{}", r.text);
    let r = dig(&d, "www.secure.test.", "A", &["+dnssec"]).await;
    assert!(ad(&r), "outside the NTA still validated: {}", r.text);
    d.shutdown().await;

    let d = resolver(&h, |c| c.dnssec.validation = false).await;
    let r = dig(&d, "www.bogus.test.", "A", &["+dnssec"]).await;
    assert_eq!(r.status, "NOERROR", "{}", r.text);
    assert!(
        !ad(&r) && !has_type(&r.answer, "RRSIG"),
        "DO stays off upstream: {}",
        r.text
    );
    d.shutdown().await;
}
