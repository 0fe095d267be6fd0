//! DNSSEC validation against zones signed by a standard signer and served
//! by a real authoritative server: ldns-keygen/ldns-signzone (Debian
//! `ldnsutils`) sign a root, `test.` and one child zone per case; NSD
//! serves them all from 127.220.0.1; resolvd (in-process) validates from
//! the test root's key as its only trust anchor; `dig` asks.
//!
//! Each case is a zone under `test.` (see [`CHILDREN`]): `secure` (NSEC),
//! `nsec3`, `insecure` (no DS), `bogus` (a record changed after signing),
//! `expired` and `notyet` (signature times), `nosig` (an RRSIG removed),
//! `badds` (the DS matches no key), `nosep` (the DNSKEY set lacks the key
//! the DS names), `unknownalg` (DS algorithm 253), `iter` (NSEC3 with 500
//! iterations, RFC 9276), `optout` (an unsigned delegation in an NSEC3
//! opt-out span) and `keytrap` (CVE-2023-50387: 50 keys sharing a key tag,
//! 50 signatures naming it).
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

/// Where NSD serves the hierarchy (port: free, or 53 for Unbound).
const NET: &str = "127.220.0.1";
/// The same hierarchy for the Unbound comparison, on port 53.
const NET_UNBOUND: &str = "127.221.0.1";

/// What is done to a child zone to make its case.
#[derive(Clone, Copy, PartialEq)]
enum Case {
    /// Signed as it is.
    Plain,
    /// Not signed, no DS.
    Unsigned,
    /// A record changed after signing.
    Tamper,
    /// The RRSIG of `www A` removed.
    StripSig,
    /// The DS in the parent names an algorithm nobody implements.
    UnknownDsAlg,
    /// The DS in the parent is that of a key the zone does not publish.
    WrongDs,
    /// Signed with the ZSK only: the DNSKEY set lacks the key the DS names.
    NoSep,
    /// KeyTrap (CVE-2023-50387): 50 extra DNSKEYs sharing one key tag,
    /// and `www A` signed by 50 RRSIGs naming that tag.
    KeyTrap,
}

/// Child zones: (label, signing arguments, case, extra zone lines).
const CHILDREN: &[(&str, &[&str], Case, &str)] = &[
    ("secure", &[], Case::Plain, ""),
    ("nsec3", &["-n", "-t", "0"], Case::Plain, ""),
    ("insecure", &[], Case::Unsigned, ""),
    ("bogus", &[], Case::Tamper, ""),
    (
        "expired",
        &["-i", "20200101000000", "-e", "20200201000000"],
        Case::Plain,
        "",
    ),
    (
        "notyet",
        &["-i", "20400101000000", "-e", "20410101000000"],
        Case::Plain,
        "",
    ),
    ("nosig", &[], Case::StripSig, ""),
    ("badds", &[], Case::WrongDs, ""),
    ("nosep", &[], Case::NoSep, ""),
    ("unknownalg", &[], Case::UnknownDsAlg, ""),
    ("iter", &["-n", "-t", "500", "-s", "abcd"], Case::Plain, ""),
    (
        "optout",
        &["-n", "-p", "-t", "0"],
        Case::Plain,
        "sub NS ns.test.\n",
    ),
    ("keytrap", &[], Case::KeyTrap, ""),
];

/// Key tag (RFC 4034 Appendix B) of DNSKEY rdata.
fn key_tag(rdata: &[u8]) -> u16 {
    let mut ac: u32 = 0;
    for (i, b) in rdata.iter().enumerate() {
        ac += if i.is_multiple_of(2) {
            (*b as u32) << 8
        } else {
            *b as u32
        };
    }
    ac += ac >> 16;
    (ac & 0xffff) as u16
}

/// `n` RSA/SHA-256 DNSKEY lines (4096-bit moduli that are odd, so a
/// verifier does the full modular exponentiation) sharing key tag `tag`.
fn colliding_keys(owner: &str, n: usize, tag: u16) -> String {
    use base64::Engine;
    let mut out = String::new();
    let mut made = 0;
    while made < n {
        let mut key = vec![3u8, 1, 0, 1];
        key.extend((0..512).map(|_| rand::random::<u8>()));
        key[4] |= 0x80;
        let last = key.len() - 1;
        key[last - 1] = 0;
        key[last] = 0;
        let mut rdata = vec![1u8, 0, 3, 8];
        rdata.extend(&key);
        // The checksum is a sum, so only the last two bytes need trying.
        let (hi_at, lo_at) = (rdata.len() - 2, rdata.len() - 1);
        let shift = |i: usize| if i.is_multiple_of(2) { 8 } else { 0 };
        let base: u32 = rdata
            .iter()
            .enumerate()
            .map(|(i, b)| (*b as u32) << shift(i))
            .sum();
        let fold = |ac: u32| ((ac + (ac >> 16)) & 0xffff) as u16;
        'search: for hi in 0..=255u32 {
            for lo in (1..=255u32).step_by(2) {
                if fold(base + (hi << shift(hi_at)) + (lo << shift(lo_at))) == tag {
                    key[last - 1] = hi as u8;
                    key[last] = lo as u8;
                    let mut check = vec![1u8, 0, 3, 8];
                    check.extend(&key);
                    assert_eq!(key_tag(&check), tag);
                    out.push_str(&format!(
                        "{owner} 300 IN DNSKEY 256 3 8 {}\n",
                        base64::engine::general_purpose::STANDARD.encode(&key)
                    ));
                    made += 1;
                    break 'search;
                }
            }
        }
    }
    out
}

/// The KeyTrap signatures: `n` RRSIGs over `www A` claiming key `tag`,
/// valid in time (copied from a real RRSIG line), with random bytes.
fn colliding_sigs(owner: &str, n: usize, tag: u16, real: &str) -> String {
    use base64::Engine;
    let f: Vec<&str> = real.split_whitespace().collect();
    let (exp, inc) = (f[8], f[9]);
    (0..n)
        .map(|_| {
            let sig: Vec<u8> = (0..512).map(|_| rand::random::<u8>()).collect();
            format!(
                "www.{owner} 300 IN RRSIG A 8 3 300 {exp} {inc} {tag} {owner} {}\n",
                base64::engine::general_purpose::STANDARD.encode(sig)
            )
        })
        .collect()
}

/// Tag shared by the KeyTrap keys.
const TRAP_TAG: u16 = 4242;

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
         *.wild A 192.0.2.3\ndn DNAME dtarget.{label}.test.\nwww.dtarget A 192.0.2.5\n"
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
    start_hierarchy_at(NET, None)
}

/// The hierarchy on `net`, port `port` (a free one when None).
fn start_hierarchy_at(net: &str, port: Option<u16>) -> Hierarchy {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let mut zones: Vec<(String, String)> = Vec::new();
    let mut parent_extra = String::new();
    for (label, args, case, extra) in CHILDREN {
        let origin = format!("{label}.test.");
        let file = format!("{label}.zone");
        let mut text = child_zone(label) + extra;
        if *case == Case::KeyTrap {
            text.push_str(&colliding_keys(&origin, 50, TRAP_TAG));
        }
        fs::write(d.join(&file), text).expect("write zone");
        parent_extra.push_str(&format!("{label} NS ns.test.\n"));
        if *case == Case::Unsigned {
            zones.push((origin, file));
            continue;
        }
        let (ksk, zsk, ds) = keys(d, &origin);
        let signed = if *case == Case::NoSep {
            let mut c = Command::new(tool("ldns-signzone", "ldnsutils"));
            c.current_dir(d)
                .args(["-o", &origin, "-f", &format!("{file}.signed"), &file, &zsk]);
            sh(c);
            format!("{file}.signed")
        } else {
            sign(d, &file, &origin, args, &ksk, &zsk)
        };
        let path = d.join(&signed);
        let text = fs::read_to_string(&path).expect("signed zone");
        let www_a_sig = |l: &&str| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.first() == Some(&format!("www.{origin}").as_str())
                && f.get(3) == Some(&"RRSIG")
                && f.get(4) == Some(&"A")
        };
        let text = match case {
            Case::Tamper => text.replacen("192.0.2.1", "192.0.2.66", 1),
            Case::StripSig => text
                .lines()
                .filter(|l| !www_a_sig(l))
                .map(|l| format!("{l}\n"))
                .collect(),
            Case::KeyTrap => {
                let real = text
                    .lines()
                    .find(www_a_sig)
                    .expect("RRSIG www A")
                    .to_string();
                let mut t: String = text
                    .lines()
                    .filter(|l| !www_a_sig(l))
                    .map(|l| format!("{l}\n"))
                    .collect();
                t.push_str(&colliding_sigs(&origin, 50, TRAP_TAG, &real));
                t
            }
            _ => text,
        };
        fs::write(&path, text).expect("post-process");
        let ds = match case {
            // The DS of a key the zone does not publish.
            Case::WrongDs => keys(d, &origin).2,
            Case::UnknownDsAlg => {
                let mut f: Vec<String> = ds.split_whitespace().map(String::from).collect();
                f[4] = "253".into();
                f.join(" ")
            }
            _ => ds,
        };
        parent_extra.push_str(&format!("{ds}\n"));
        zones.push((origin, signed));
    }
    // The unsigned child below the opt-out span.
    fs::write(d.join("sub.optout.zone"), child_zone("sub.optout")).expect("write zone");
    zones.push(("sub.optout.test.".into(), "sub.optout.zone".into()));
    fs::write(
        d.join("test.zone"),
        format!(
            "$ORIGIN test.\n$TTL 300\n@ SOA ns.test. h.test. 1 3600 600 86400 300\n\
             @ NS ns.test.\nns A {net}\n{parent_extra}"
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
             . NS ns.test.\ntest. NS ns.test.\nns.test. A {net}\n{ds}\n"
        ),
    )
    .expect("write root");
    let (ksk, zsk, root_ds) = keys(d, ".");
    zones.push((".".into(), sign(d, "root.zone", ".", &[], &ksk, &zsk)));
    let anchor = d.join("root.anchor");
    fs::write(&anchor, format!("{root_ds}\n")).expect("anchor");

    let port = port.unwrap_or_else(|| free_port(&[net.to_string()]));
    let mut conf = format!(
        "server:\n  ip-address: {net}@{port}\n  zonesdir: \"{}\"\n  pidfile: \"\"\n  \
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
        format!(". 3600000 NS ns.test.\nns.test. 3600000 A {net}\n"),
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
    dig_at(d.local_addrs()[0], name, qtype, opts).await
}

async fn dig_at(addr: std::net::SocketAddr, name: &str, qtype: &str, opts: &[&str]) -> Reply {
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
    // A DNAME: signed, with the unsigned CNAME it implies.
    let r = dig(&d, "www.dn.secure.test.", "A", &["+dnssec"]).await;
    assert!(ad(&r) && has_type(&r.answer, "DNAME"), "DNAME: {}", r.text);
    assert!(
        r.answer.iter().any(|l| l.contains("192.0.2.5")),
        "{}",
        r.text
    );

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

    // Not yet valid: EDE 8. An RRset without its RRSIG in a signed zone:
    // EDE 10.
    let r = dig(&d, "www.notyet.test.", "A", &["+dnssec"]).await;
    assert_eq!(r.status, "SERVFAIL", "{}", r.text);
    assert_eq!(r.ede, Some(8), "{}", r.text);
    let r = dig(&d, "www.nosig.test.", "A", &["+dnssec"]).await;
    assert_eq!(r.status, "SERVFAIL", "{}", r.text);
    assert_eq!(r.ede, Some(10), "{}", r.text);
    let r = dig(&d, "mail.nosig.test.", "A", &["+dnssec"]).await;
    assert!(ad(&r), "{}", r.text);

    // The DNSKEY set lacks the key the DS names: EDE 9.
    let r = dig(&d, "www.nosep.test.", "A", &["+dnssec"]).await;
    assert_eq!(r.status, "SERVFAIL", "{}", r.text);
    assert_eq!(r.ede, Some(9), "{}", r.text);

    // A DS with an algorithm nobody implements: insecure (RFC 4035 §5.2),
    // answered with EDE 1.
    let r = dig(&d, "www.unknownalg.test.", "A", &["+dnssec"]).await;
    assert_eq!(r.status, "NOERROR", "{}", r.text);
    assert!(!ad(&r), "{}", r.text);
    assert_eq!(r.ede, Some(1), "{}", r.text);

    // An unsigned delegation inside an NSEC3 opt-out span: insecure;
    // the signed names of the zone stay secure.
    let r = dig(&d, "www.sub.optout.test.", "A", &["+dnssec"]).await;
    assert_eq!(r.status, "NOERROR", "{}", r.text);
    assert!(!ad(&r) && has_type(&r.answer, "A"), "{}", r.text);
    let r = dig(&d, "www.optout.test.", "A", &["+dnssec"]).await;
    assert!(ad(&r), "{}", r.text);

    // A DS that matches no DNSKEY: EDE 9.
    let r = dig(&d, "www.badds.test.", "A", &["+dnssec"]).await;
    assert_eq!(r.status, "SERVFAIL", "{}", r.text);
    assert_eq!(r.ede, Some(9), "{}", r.text);

    // Every bogus case: SERVFAIL with its EDE for DO=0 clients too, and
    // the data (without AD) for CD=1 clients (RFC 4035 §3.2.2).
    for (name, code) in [
        ("www.bogus.test.", 6),
        ("www.expired.test.", 7),
        ("www.notyet.test.", 8),
        ("www.badds.test.", 9),
        ("www.nosep.test.", 9),
        ("www.nosig.test.", 10),
        ("www.keytrap.test.", 6),
    ] {
        let r = dig(&d, name, "A", &[]).await;
        assert_eq!(
            (r.status.as_str(), r.ede),
            ("SERVFAIL", Some(code)),
            "{}",
            r.text
        );
        let r = dig(&d, name, "A", &["+cd"]).await;
        assert_eq!(r.status, "NOERROR", "CD=1 gets {name}: {}", r.text);
        assert!(!ad(&r) && has_type(&r.answer, "A"), "{}", r.text);
    }

    // NSEC3 with 500 iterations: signatures verify, but the denial is
    // insecure (RFC 9276 §3.2) with EDE 27.
    let r = dig(&d, "nope.iter.test.", "A", &["+dnssec"]).await;
    assert_eq!(r.status, "NXDOMAIN", "{}", r.text);
    assert!(!ad(&r), "{}", r.text);
    assert_eq!(r.ede, Some(27), "{}", r.text);

    // Verdicts are counted; a bogus answer is kept (bogus_ttl), so asking
    // again costs no upstream query.
    for key in ["dnssec_secure", "dnssec_insecure", "dnssec_bogus"] {
        assert!(stat(&d, key) > 0, "{key} counted");
    }
    let before = stat(&d, "upstream_queries");
    let r = dig(&d, "www.bogus.test.", "A", &["+dnssec"]).await;
    assert_eq!(r.status, "SERVFAIL", "{}", r.text);
    assert_eq!(
        stat(&d, "upstream_queries"),
        before,
        "bogus answer served from cache"
    );
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

/// resolvd as its own process, so its CPU time is its own (other tests
/// of this file run resolvd in-process at the same time).
struct Separate {
    _dir: tempfile::TempDir,
    procs: Procs,
    addr: std::net::SocketAddr,
}

fn spawn_resolver(h: &Hierarchy, dnssec_extra: &str) -> Separate {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port(&["127.0.0.1".to_string()]);
    let conf = dir.path().join("resolvd.toml");
    fs::write(
        &conf,
        format!(
            "[server]\nlisten = [\"127.0.0.1:{port}\"]\nthreads = 1\n\
             [resolver]\nroot_hints = \"{}\"\nquery_loopback = true\nupstream_port = {}\n\
             special_use_exclude = [\"test.\"]\n\
             [dnssec]\ntrust_anchor_files = [\"{}\"]\n{dnssec_extra}\n\
             [control]\nenabled = false\n[log]\nlevel = \"info\"\n",
            h.hints, h.port, h.anchor
        ),
    )
    .expect("config");
    let mut procs = Procs::default();
    let mut c = Command::new(env!("CARGO_BIN_EXE_resolvd"));
    c.arg("--config").arg(&conf);
    let i = procs.spawn("resolvd", c, &dir.path().join("resolvd.log"));
    procs.wait_for_log(i, "listening on");
    Separate {
        addr: format!("127.0.0.1:{port}").parse().expect("addr"),
        procs,
        _dir: dir,
    }
}

/// CPU time of process `pid` so far: the run time of all its threads,
/// in nanoseconds, from /proc/PID/task/*/schedstat (clock ticks in
/// /proc/PID/stat are 10 ms, too coarse for one query).
fn cpu_of(pid: u32) -> Duration {
    let mut ns = 0u64;
    for task in fs::read_dir(format!("/proc/{pid}/task"))
        .expect("/proc task dir")
        .flatten()
    {
        let stat = fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
        ns += stat
            .split_whitespace()
            .next()
            .and_then(|x| x.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Duration::from_nanos(ns)
}

/// CPU spent answering `www.keytrap.test. A` (after a first query has
/// validated the zone's keys), and the reply.
async fn keytrap_cost(r: &Separate) -> (Duration, Reply) {
    let warm = dig_at(r.addr, "mail.keytrap.test.", "A", &["+dnssec"]).await;
    assert!(ad(&warm), "the zone itself validates: {}", warm.text);
    let pid = r.procs.pid(0);
    let before = cpu_of(pid);
    let reply = dig_at(r.addr, "www.keytrap.test.", "A", &["+dnssec"]).await;
    // Let the reply's last work (caching) finish before reading.
    tokio::time::sleep(Duration::from_millis(50)).await;
    (cpu_of(pid) - before, reply)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keytrap_zone_costs_one_query_little_cpu() {
    let h = start_hierarchy();
    let r = spawn_resolver(&h, "");
    let (limited, reply) = keytrap_cost(&r).await;
    assert_eq!(reply.status, "SERVFAIL", "{}", reply.text);
    assert_eq!(reply.ede, Some(6), "{}", reply.text);
    drop(r);

    // The same zone with the limits lifted: every key is tried for every
    // signature (50 × 50 RSA-4096 checks), which is what the limits stop.
    let r = spawn_resolver(
        &h,
        "max_keys_per_tag = 1000\nmax_signatures_per_rrset = 1000\nmax_validation_work = 1000000",
    );
    let (unlimited, reply) = keytrap_cost(&r).await;
    assert_eq!(reply.status, "SERVFAIL", "{}", reply.text);
    drop(r);
    eprintln!("KeyTrap query CPU: {limited:?} with the limits, {unlimited:?} without");
    assert!(
        limited < Duration::from_millis(50),
        "one KeyTrap query cost {limited:?} of CPU"
    );
    assert!(
        unlimited > limited * 4,
        "without limits the zone should cost far more ({unlimited:?} vs {limited:?})"
    );
}

/// Unbound 1.17 as a validator on the same hierarchy, from the same anchor.
fn spawn_unbound(h: &Hierarchy) -> Separate {
    let unbound = tool("unbound", "unbound");
    assert_eq!(h.port, 53, "unbound only queries port 53 upstream");
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port(&["127.0.0.1".to_string()]);
    let d = dir.path().display().to_string();
    let conf = dir.path().join("unbound.conf");
    fs::write(
        &conf,
        format!(
            "server:\n    interface: 127.0.0.1@{port}\n    port: {port}\n    username: \"\"\n    \
             chroot: \"\"\n    directory: \"{d}\"\n    pidfile: \"{d}/unbound.pid\"\n    \
             use-syslog: no\n    logfile: \"\"\n    verbosity: 1\n    num-threads: 1\n    \
             module-config: \"validator iterator\"\n    root-hints: \"{}\"\n    \
             trust-anchor-file: \"{}\"\n    ede: yes\n    \
             do-not-query-localhost: no\n    do-ip6: no\n    \
             access-control: 127.0.0.0/8 allow\n    local-zone: \"test.\" nodefault\n\
             remote-control:\n    control-enable: no\n",
            h.hints, h.anchor
        ),
    )
    .expect("write unbound.conf");
    let mut procs = Procs::default();
    let mut c = Command::new(unbound);
    c.arg("-d").arg("-c").arg(&conf);
    let i = procs.spawn("unbound", c, &dir.path().join("unbound.log"));
    procs.wait_for_log(i, "start of service");
    Separate {
        addr: format!("127.0.0.1:{port}").parse().expect("addr"),
        procs,
        _dir: dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_states_match_unbound_with_the_same_anchor() {
    let h = start_hierarchy_at(NET_UNBOUND, Some(53));
    let ours = spawn_resolver(&h, "");
    let unbound = spawn_unbound(&h);
    let mut questions: Vec<(String, &str)> = Vec::new();
    for (label, ..) in CHILDREN {
        for (name, t) in [
            ("www", "A"),
            ("www", "MX"),
            ("nope", "A"),
            ("alias", "A"),
            ("x.wild", "A"),
            ("www.dn", "A"),
        ] {
            questions.push((format!("{name}.{label}.test."), t));
        }
    }
    questions.push(("www.sub.optout.test.".into(), "A"));
    questions.push(("test.".into(), "SOA"));
    questions.push(("nope.test.".into(), "A"));
    let mut differ = Vec::new();
    for (name, t) in &questions {
        let a = dig_at(ours.addr, name, t, &["+dnssec"]).await;
        let b = dig_at(unbound.addr, name, t, &["+dnssec"]).await;
        if (a.status.as_str(), ad(&a)) != (b.status.as_str(), ad(&b)) {
            differ.push(format!(
                "{name} {t}: resolvd {} ad={} / unbound {} ad={}",
                a.status,
                ad(&a),
                b.status,
                ad(&b)
            ));
        }
    }
    assert!(
        differ.is_empty(),
        "RCODE/AD differ from Unbound's on {} of {} questions:\n{}",
        differ.len(),
        questions.len(),
        differ.join("\n")
    );
}

fn stat(d: &Daemon, key: &str) -> u64 {
    d.handler()
        .stats()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {key} in stats"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggressive_nsec_answers_inside_validated_ranges_without_asking() {
    let h = start_hierarchy();
    let d = resolver(&h, |_| {}).await;
    // Learn two NSEC ranges of secure.test.: the one covering "nope"
    // (mail → *.wild) and the apex's (which covers *.secure.test.).
    let r = dig(&d, "nope.secure.test.", "A", &["+dnssec"]).await;
    assert_eq!(r.status, "NXDOMAIN", "{}", r.text);
    let r = dig(&d, "www.secure.test.", "MX", &["+dnssec"]).await;
    assert!(ad(&r) && r.answer.is_empty(), "{}", r.text);
    let before = stat(&d, "upstream_queries");
    // Another name in the same range, and another type at www.
    let r = dig(&d, "noq.secure.test.", "A", &["+dnssec"]).await;
    assert_eq!(r.status, "NXDOMAIN", "{}", r.text);
    assert!(ad(&r) && has_type(&r.authority, "NSEC"), "{}", r.text);
    let r = dig(&d, "www.secure.test.", "TXT", &["+dnssec"]).await;
    assert_eq!(r.status, "NOERROR", "{}", r.text);
    assert!(ad(&r) && r.answer.is_empty(), "{}", r.text);
    assert_eq!(
        stat(&d, "upstream_queries"),
        before,
        "answered from NSEC ranges"
    );
    assert_eq!(stat(&d, "dnssec_aggressive"), 2);
    // Outside the ranges: asked upstream (and found).
    let r = dig(&d, "alias.secure.test.", "A", &["+dnssec"]).await;
    assert!(ad(&r) && has_type(&r.answer, "A"), "{}", r.text);
    assert!(stat(&d, "upstream_queries") > before);
    d.shutdown().await;

    let d = resolver(&h, |c| c.dnssec.aggressive_nsec = false).await;
    dig(&d, "nope.secure.test.", "A", &["+dnssec"]).await;
    let before = stat(&d, "upstream_queries");
    let r = dig(&d, "noq.secure.test.", "A", &["+dnssec"]).await;
    assert_eq!(r.status, "NXDOMAIN", "{}", r.text);
    assert!(stat(&d, "upstream_queries") > before, "off: asked upstream");
    d.shutdown().await;
}

/// `[[forward]]` zones (issue 11) are validated like walked answers: the
/// forwarded secure zone gets AD, the forwarded bogus zone SERVFAIL, and a
/// negative trust anchor lets the bogus one through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_answers_are_validated_unless_a_negative_trust_anchor_says_not() {
    use resolvd::resolve::forward::ForwardConfig;
    let h = start_hierarchy();
    let forwards = |c: &mut Config| {
        c.forward = ["secure.test.", "bogus.test."]
            .iter()
            .map(|z| ForwardConfig {
                zone: z.to_string(),
                servers: vec![format!("{NET}:{}", h.port)],
                recursion: true,
                fallback: false,
                tls: None,
            })
            .collect();
    };
    let d = resolver(&h, forwards).await;
    let r = dig(&d, "www.secure.test.", "A", &["+dnssec"]).await;
    assert_eq!(r.status, "NOERROR", "{}", r.text);
    assert!(ad(&r), "a forwarded secure answer is validated: {}", r.text);
    let r = dig(&d, "www.bogus.test.", "A", &["+dnssec"]).await;
    assert_eq!(r.status, "SERVFAIL", "a forwarded bogus answer: {}", r.text);
    d.shutdown().await;

    let d = resolver(&h, |c| {
        forwards(c);
        c.dnssec.negative_trust_anchors = vec!["bogus.test.".into()];
    })
    .await;
    let r = dig(&d, "www.bogus.test.", "A", &["+dnssec"]).await;
    assert_eq!(r.status, "NOERROR", "NTA: {}", r.text);
    assert!(!ad(&r), "{}", r.text);
    d.shutdown().await;
}

/// The shared cache (issue 11) carries an answer's security state and its
/// signatures: an instance that never validated `www.secure.test.` answers
/// it from Redis with AD and, for DO=1, its RRSIG; without
/// `trust_shared_validation` it validates for itself instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_validated_answer_shared_through_redis_keeps_ad_and_its_signatures() {
    use resolvd::cache_l2::RedisConfig;
    use resolvd::config::Dur;
    let h = start_hierarchy();
    // The fleet tests' Redis address (127.219.0.1), on a port of its own.
    let ip = "127.219.0.1";
    let port = free_port(&[ip.to_string()]);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut procs = Procs::default();
    let mut cmd = Command::new(tool("redis-server", "redis-server"));
    cmd.args(["--bind", ip, "--port", &port.to_string()])
        .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
        .arg("--dir")
        .arg(dir.path());
    let i = procs.spawn("redis-server", cmd, &dir.path().join("redis.log"));
    procs.wait_for_log(i, "Ready to accept connections");
    let shared = |trust: bool| {
        move |c: &mut Config| {
            c.cache.redis = Some(RedisConfig {
                url: format!("redis://{ip}:{port}/0"),
                key_prefix: "dnssec:".into(),
                timeout: Dur::millis(500),
                trust_shared_validation: trust,
                ..RedisConfig::default()
            })
        }
    };

    let a = resolver(&h, shared(true)).await;
    let r = dig(&a, "www.secure.test.", "A", &["+dnssec"]).await;
    assert!(ad(&r) && has_type(&r.answer, "RRSIG"), "{}", r.text);
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while stat(&a, "l2_writes") < 1 {
        assert!(std::time::Instant::now() < until, "A never wrote to Redis");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let b = resolver(&h, shared(true)).await;
    let r = dig(&b, "www.secure.test.", "A", &["+dnssec"]).await;
    assert!(ad(&r), "the secure state came through Redis: {}", r.text);
    assert!(
        has_type(&r.answer, "RRSIG"),
        "and the signatures: {}",
        r.text
    );
    assert_eq!(stat(&b, "l2_hits"), 1);
    assert_eq!(
        stat(&b, "upstream_queries"),
        0,
        "B validated nothing itself"
    );
    let r = dig(&b, "www.secure.test.", "A", &[]).await;
    assert!(!has_type(&r.answer, "RRSIG"), "no DO, no RRSIG: {}", r.text);

    let c = resolver(&h, shared(false)).await;
    let r = dig(&c, "www.secure.test.", "A", &["+dnssec"]).await;
    assert!(ad(&r), "{}", r.text);
    assert_eq!(stat(&c, "l2_hits"), 0, "a validated entry is not believed");
    assert!(stat(&c, "upstream_queries") > 0, "C validated for itself");
    for d in [a, b, c] {
        d.shutdown().await;
    }
}
