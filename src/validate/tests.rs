//! Unit tests of the pure validator: the parts that decide without
//! cryptography (time arithmetic, NSEC ranges and proofs, the budget).
//! Signatures are checked end to end against a real signer in
//! `tests/dnssec.rs`.

use super::nsec::{covers, proves_nodata, proves_nxdomain};
use super::{serial_le, Work};
use hickory_proto::dnssec::rdata::NSEC;
use hickory_proto::rr::{Name, RecordType};

fn n(s: &str) -> Name {
    Name::from_ascii(s).expect("name")
}

#[test]
fn signature_times_compare_as_serial_numbers_across_the_wrap() {
    assert!(serial_le(10, 20));
    assert!(!serial_le(20, 10));
    // 2^32 - 5 is just before 5 in serial arithmetic (RFC 1982).
    assert!(serial_le(u32::MAX - 5, 5));
    assert!(!serial_le(5, u32::MAX - 5));
    assert!(serial_le(7, 7));
}

#[test]
fn nsec_covers_names_between_owner_and_next_and_the_last_one_wraps() {
    let mid = NSEC::new(n("m.example."), [RecordType::A]);
    assert!(covers(&n("c.example."), &mid, &n("d.example.")));
    assert!(!covers(&n("c.example."), &mid, &n("c.example.")));
    assert!(!covers(&n("c.example."), &mid, &n("m.example.")));
    assert!(!covers(&n("c.example."), &mid, &n("x.example.")));
    // The last NSEC points back at the apex: it covers everything after it.
    let last = NSEC::new(n("example."), [RecordType::A]);
    assert!(covers(&n("x.example."), &last, &n("z.example.")));
    assert!(covers(&n("x.example."), &last, &n("a.z.example.")));
    assert!(!covers(&n("x.example."), &last, &n("b.example.")));
}

#[test]
fn nxdomain_needs_the_name_and_the_wildcard_covered() {
    let (apex, c) = (n("example."), n("c.example."));
    let at_apex = NSEC::new(n("c.example."), [RecordType::SOA, RecordType::NS]);
    let at_c = NSEC::new(n("m.example."), [RecordType::A]);
    // d.example. is covered by c → m; *.example. by example. → c.
    let both = [(&apex, &at_apex), (&c, &at_c)];
    assert!(proves_nxdomain(&both, &n("d.example.")));
    let name_only = [(&c, &at_c)];
    assert!(
        !proves_nxdomain(&name_only, &n("d.example.")),
        "wildcard not disproven"
    );
}

#[test]
fn nodata_is_proven_by_the_nsec_at_the_name_without_the_type() {
    let www = n("www.example.");
    let at_www = NSEC::new(n("z.example."), [RecordType::A, RecordType::RRSIG]);
    let set = [(&www, &at_www)];
    assert!(proves_nodata(&set, &www, RecordType::MX));
    assert!(!proves_nodata(&set, &www, RecordType::A), "A exists");
    let cname = NSEC::new(n("z.example."), [RecordType::CNAME]);
    let set = [(&www, &cname)];
    assert!(
        !proves_nodata(&set, &www, RecordType::MX),
        "a CNAME answers every type"
    );
}

#[test]
fn no_ds_is_proven_only_at_a_delegation() {
    // The NSEC at a name with data but no NS: not a zone cut, so "no DS
    // here" must not make anything below insecure (RFC 4035 §5.2).
    let www = n("www.example.");
    let data = NSEC::new(n("z.example."), [RecordType::A]);
    assert!(!proves_nodata(&[(&www, &data)], &www, RecordType::DS));
    // The parent's NSEC at a delegation: NS, no DS, no SOA.
    let child = n("child.example.");
    let cut = NSEC::new(n("z.example."), [RecordType::NS]);
    assert!(proves_nodata(&[(&child, &cut)], &child, RecordType::DS));
    // The child's apex NSEC speaks for the child, not for the DS.
    let apex = NSEC::new(n("a.child.example."), [RecordType::NS, RecordType::SOA]);
    assert!(!proves_nodata(&[(&child, &apex)], &child, RecordType::DS));
    // A parent-side delegation NSEC says nothing about data below the cut.
    assert!(!proves_nodata(&[(&child, &cut)], &child, RecordType::A));
}

#[test]
fn the_work_budget_runs_out_and_says_so() {
    let w = Work::new(2);
    assert!(w.take().is_ok());
    assert!(w.take().is_ok());
    let e = w.take().expect_err("third operation refused");
    assert_eq!(e.ede, super::ede::BOGUS);
}
