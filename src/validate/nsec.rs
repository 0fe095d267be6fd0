//! Denial of existence with NSEC (RFC 4035 §5.4, RFC 4034 §4, RFC 6840
//! §4.1): which names a verified NSEC RRset proves absent, and which types
//! absent at a name. Names compare in canonical order (RFC 4034 §6.1),
//! which is how hickory orders `Name`.

use hickory_proto::dnssec::rdata::{DNSSECRData, NSEC};
use hickory_proto::rr::{Name, RData, Record, RecordType};

/// Verified NSEC records: (owner, rdata).
pub type Nsecs<'a> = [(&'a Name, &'a NSEC)];

/// The NSEC records in `records`.
pub fn collect(records: &[Record]) -> Vec<(&Name, &NSEC)> {
    records
        .iter()
        .filter_map(|r| match &r.data {
            RData::DNSSEC(DNSSECRData::NSEC(n)) => Some((&r.name, n)),
            _ => None,
        })
        .collect()
}

/// Whether the NSEC at `owner` covers `name`: `name` sorts strictly
/// between the owner and the next name (the last NSEC wraps to the apex).
pub fn covers(owner: &Name, nsec: &NSEC, name: &Name) -> bool {
    let next = nsec.next_domain_name();
    if owner < next {
        owner < name && name < next
    } else {
        name > owner || name < next
    }
}

/// An NSEC at a delegation point seen from the parent (NS without SOA)
/// says nothing about names below it (RFC 6840 §4.1).
fn is_delegation(nsec: &NSEC) -> bool {
    let t = nsec.type_set();
    t.contains(RecordType::NS) && !t.contains(RecordType::SOA)
}

fn covering<'a>(nsecs: &'a Nsecs<'a>, name: &Name) -> Option<&'a (&'a Name, &'a NSEC)> {
    nsecs.iter().find(|(o, n)| {
        covers(o, n, name)
            // Not a parent-side NSEC of a zone cut above the name.
            && !(is_delegation(n) && o.zone_of(name) && *o != name)
    })
}

/// The closest encloser of a name proven absent by the NSEC at `owner`
/// with next name `next`: the deepest ancestor of `name` that exists,
/// which is the longer common ancestor of `name` with either end.
pub fn closest_encloser(name: &Name, owner: &Name, next: &Name) -> Name {
    let common = |other: &Name| {
        let mut n = name.clone();
        while !n.zone_of(other) && !n.is_root() {
            n = n.base_name();
        }
        n
    };
    let a = common(owner);
    let b = common(next);
    if a.num_labels() >= b.num_labels() {
        a
    } else {
        b
    }
}

/// `*.ce`: the wildcard whose absence a denial must prove.
pub fn wildcard_of(ce: &Name) -> Option<Name> {
    Name::from_ascii("*").ok()?.append_domain(ce).ok()
}

/// NXDOMAIN for `qname` (RFC 4035 §5.4): an NSEC covers the name and an
/// NSEC covers the wildcard at its closest encloser.
pub fn proves_nxdomain(nsecs: &Nsecs<'_>, qname: &Name) -> bool {
    let Some((owner, nsec)) = covering(nsecs, qname) else {
        return false;
    };
    let ce = closest_encloser(qname, owner, nsec.next_domain_name());
    let Some(wild) = wildcard_of(&ce) else {
        return false;
    };
    covering(nsecs, &wild).is_some()
}

/// NODATA for (`qname`, `qtype`): an NSEC at the name without the type
/// (nor a CNAME); or an empty non-terminal (an NSEC covering the name
/// whose next name is below it); or, for a wildcard, the name covered and
/// the wildcard's NSEC without the type (RFC 4035 §3.1.3.4).
pub fn proves_nodata(nsecs: &Nsecs<'_>, qname: &Name, qtype: RecordType) -> bool {
    let lacks = |n: &NSEC| {
        let t = n.type_set();
        !t.contains(qtype) && !t.contains(RecordType::CNAME)
    };
    if let Some((_, n)) = nsecs.iter().find(|(o, _)| *o == qname) {
        // At a delegation the parent's NSEC only speaks for DS; the
        // child's apex NSEC never does (RFC 6840 §4.1, §4.4).
        // For DS the NSEC must show a delegation (NS, no SOA): a name
        // that is not a zone cut has no DS either, and "no DS here" must
        // not make data under a signed zone insecure (RFC 4035 §5.2).
        let ok_side = if qtype == RecordType::DS {
            is_delegation(n)
        } else {
            !is_delegation(n)
        };
        return ok_side && lacks(n);
    }
    if qtype == RecordType::DS {
        return false;
    }
    let Some((owner, nsec)) = covering(nsecs, qname) else {
        return false;
    };
    let next = nsec.next_domain_name();
    if qname.zone_of(next) && next != qname {
        return true;
    }
    let ce = closest_encloser(qname, owner, next);
    let Some(wild) = wildcard_of(&ce) else {
        return false;
    };
    nsecs
        .iter()
        .any(|(o, n)| **o == wild && !is_delegation(n) && lacks(n))
}

/// A wildcard expansion for `qname` from the wildcard under `ce` is
/// legitimate when `qname` itself does not exist (RFC 4035 §5.3.4).
pub fn proves_no_closer_match(nsecs: &Nsecs<'_>, qname: &Name) -> bool {
    covering(nsecs, qname).is_some()
}
