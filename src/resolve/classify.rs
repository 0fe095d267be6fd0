//! Reading one upstream reply (RFC 1034 §5.3.3 step 4, RFC 2181 §5.4.1,
//! RFC 2308): what it says about the question asked of a zone's server —
//! an answer (with CNAME/DNAME chains followed inside it, RFC 6672), a
//! negative answer, a referral downwards, or nothing usable (lame) — after
//! bailiwick filtering, and what of it the store keeps.
//!
//! Strictness: NXDOMAIN and NODATA only with AA; a reply with neither AA
//! nor a referral, or an RCODE other than NOERROR/NXDOMAIN, is lame;
//! records of a type that was not asked are not data; glue is believed
//! only under the delegating zone (in bailiwick or a sibling's).

use super::store::{ns_target, Delegation, Rank, Store};
use crate::wire::query::rcode;
use crate::wire::same_name;
use hickory_proto::dnssec::rdata::DNSSECRData;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};

/// RR type code of DNAME, whose rdata hickory-proto leaves as `RData::Unknown`.
const DNAME: u16 = 39;

/// What one server said about one question, after bailiwick filtering.
pub(crate) enum Outcome {
    /// Records for the name (possibly a CNAME/DNAME chain), as
    /// [`follow_chain`] found them: where the chain ends, and whether that
    /// name's data of the asked type is among them.
    Answer {
        /// The chain's records, in order.
        records: Vec<Record>,
        /// Their RRSIGs.
        sigs: Vec<Record>,
        /// The NSEC/NSEC3 records (with RRSIGs) of the authority section,
        /// which prove a wildcard expansion (RFC 4035 §3.1.3.3).
        proof: Vec<Record>,
        /// The last name of the chain.
        end: Name,
        /// Whether `end`'s data of the asked type is in `records`.
        complete: bool,
    },
    /// The name or type does not exist; the SOA (if any) for the
    /// authority section, with the NSEC/NSEC3 proof and RRSIGs if sent.
    Negative { rcode: u16, soa: Vec<Record> },
    /// Go down to `child`.
    Referral(Delegation),
}

impl Outcome {
    /// An answer from a chain [`follow_chain`] found (its records, end and
    /// completeness), the chain's RRSIGs, and of the reply's denial
    /// records the ones that prove a wildcard expansion (all but the SOA).
    pub(crate) fn answer(
        records: Vec<Record>,
        end: Name,
        complete: bool,
        sigs: Vec<Record>,
        denial: impl IntoIterator<Item = Record>,
    ) -> Outcome {
        let proof = denial
            .into_iter()
            .filter(|r| covered_type(r) != RecordType::SOA)
            .collect();
        Outcome::Answer {
            records,
            sigs,
            proof,
            end,
            complete,
        }
    }
}

/// Turns a reply into an [`Outcome`], storing what it teaches. None
/// means the server is lame for this zone (bad RCODE, a referral that
/// does not go down, a non-authoritative empty reply).
pub(crate) fn classify(
    store: &Store,
    msg: &Message,
    cut: &Delegation,
    sname: &Name,
    stype: RecordType,
) -> Option<Outcome> {
    let zone = &cut.zone;
    let inside = |r: &&Record| r.dns_class == DNSClass::IN && zone.zone_of(&r.name);
    let rc = msg.metadata.response_code;
    if rc != ResponseCode::NoError && rc != ResponseCode::NXDomain {
        return None;
    }
    let aa = msg.metadata.authoritative;
    // Borrowed when every record is inside the zone, as nearly always.
    let answers: std::borrow::Cow<'_, [Record]> = if msg.answers.iter().all(|r| inside(&r)) {
        std::borrow::Cow::Borrowed(&msg.answers)
    } else {
        msg.answers.iter().filter(inside).cloned().collect()
    };
    // The SOA and, from a signed zone, the NSEC/NSEC3 proof and their
    // RRSIGs: what validation of a negative answer needs.
    let soa: Vec<Record> = msg
        .authorities
        .iter()
        .filter(inside)
        .filter(|r| is_denial(covered_type(r)))
        .cloned()
        .collect();
    let rank = if aa {
        Rank::AuthAnswer
    } else {
        Rank::NonAuthAnswer
    };
    if !answers.is_empty() {
        // Records of a type that was not asked (and no CNAME/DNAME
        // leading to the asked type) are not an answer: follow_chain
        // leaves them out, and they are neither stored nor returned.
        let (used, end, complete) = follow_chain(&answers, sname, stype);
        if !used.is_empty() {
            let sigs = signatures_of(&answers, &used);
            // A plain answer lives in the answer cache already; the
            // store keeps chains (so a question about any link's
            // target needs no upstream query) and what steers walks: a
            // zone's own NS set and its servers' own addresses.
            let chain = used.iter().chain(&sigs).any(|r| r.record_type() != stype);
            // (Name equality ignores ASCII case.)
            let steers = stype == RecordType::NS
                || (is_addr_type(stype)
                    && (has_name(&cut.child_ns, sname) || has_name(&cut.parent_ns, sname)));
            if chain || steers {
                // In one call: put_all keeps each RRSIG with the RRset it
                // covers, under the same key.
                store.put_all(used.iter().chain(&sigs), rank);
            }
            if rc == ResponseCode::NXDomain {
                return Some(Outcome::Negative {
                    rcode: rcode::NXDOMAIN,
                    soa,
                });
            }
            return Some(Outcome::answer(
                used,
                end,
                complete,
                sigs,
                soa.iter().cloned(),
            ));
        }
    }
    if rc == ResponseCode::NXDomain {
        // Only the zone's server may say a name does not exist: an
        // NXDOMAIN without AA comes from something else (a middlebox,
        // a lame server).
        if !aa {
            return None;
        }
        return Some(Outcome::Negative {
            rcode: rcode::NXDOMAIN,
            soa,
        });
    }
    let ns: Vec<Record> = msg
        .authorities
        .iter()
        .filter(inside)
        .filter(|r| r.record_type() == RecordType::NS)
        .cloned()
        .collect();
    if let Some(first) = ns.first() {
        let child = first.name.to_lowercase();
        let goes_down = child != *zone && zone.zone_of(&child) && child.zone_of(sname);
        if !aa || child != *zone {
            if !goes_down {
                return None;
            }
            let ns: Vec<Record> = ns
                .into_iter()
                .filter(|r| same_name(&r.name, &child))
                .collect();
            let names: Vec<Name> = ns.iter().filter_map(ns_target).collect();
            // Glue is only believed under the delegating zone: in
            // bailiwick of the child, or a sibling's (which is what
            // breaks a cycle of zones served from each other).
            let glue: Vec<Record> = msg
                .additionals
                .iter()
                .filter(inside)
                .filter(|r| is_addr(r) && has_name(&names, &r.name))
                .cloned()
                .collect();
            // Glue first: a concurrent walk that sees the new NS set
            // must find its addresses already there.
            store.put_all(&glue, Rank::Glue);
            store.put(ns, Rank::Referral);
            return Some(Outcome::Referral(Delegation {
                zone: child,
                child_ns: Vec::new(),
                parent_ns: names,
            }));
        }
    }
    // NODATA, which only the zone's server can say; a reply without AA
    // and without a referral is lame, whatever its authority section.
    if aa {
        return Some(Outcome::Negative { rcode: 0, soa });
    }
    None
}

/// The RRSIGs in `records` that cover an RRset in `used`: each RRset's
/// signatures travel with it (RFC 4035 §3.1.1).
pub(crate) fn signatures_of(records: &[Record], used: &[Record]) -> Vec<Record> {
    records
        .iter()
        .filter(|r| r.record_type() == RecordType::RRSIG)
        .filter(|s| {
            used.iter()
                .any(|u| u.record_type() == covered_type(s) && same_name(&u.name, &s.name))
        })
        .cloned()
        .collect()
}

/// The type a record speaks for: an RRSIG's covered type, else its own.
pub(crate) fn covered_type(r: &Record) -> RecordType {
    match &r.data {
        RData::DNSSEC(DNSSECRData::RRSIG(s)) => s.input().type_covered,
        _ => r.record_type(),
    }
}

pub(crate) fn is_denial(t: RecordType) -> bool {
    matches!(t, RecordType::SOA | RecordType::NSEC | RecordType::NSEC3)
}

/// Whether `name` is one of `names` (case ignored).
pub(crate) fn has_name(names: &[Name], name: &Name) -> bool {
    names.iter().any(|n| same_name(n, name))
}

pub(crate) fn is_addr(r: &Record) -> bool {
    is_addr_type(r.record_type())
}

fn is_addr_type(t: RecordType) -> bool {
    matches!(t, RecordType::A | RecordType::AAAA)
}

/// RFC 2308 §5: a negative answer lives min(SOA TTL, SOA MINIMUM).
pub(crate) fn negative_ttl(soa: &Record) -> Option<u32> {
    match &soa.data {
        RData::SOA(s) => Some(soa.ttl.min(s.minimum)),
        _ => None,
    }
}

pub(crate) fn cname_target(r: &Record) -> Option<Name> {
    match &r.data {
        RData::CNAME(c) => Some(c.0.clone()),
        _ => None,
    }
}

/// The target of a DNAME record (RFC 6672 §2.1: never compressed).
fn dname_target(r: &Record) -> Option<Name> {
    match &r.data {
        RData::Unknown { code, rdata } if u16::from(*code) == DNAME => {
            Name::read(&mut BinDecoder::new(&rdata.anything)).ok()
        }
        _ => None,
    }
}

/// The name a DNAME rewrites `name` to (RFC 6672 §2.2): the labels of
/// `name` below the DNAME's owner, then the DNAME's target.
pub(crate) fn dname_synthesis(dname: &Record, name: &Name) -> Option<Name> {
    let target = dname_target(dname)?;
    let keep = name
        .iter()
        .count()
        .saturating_sub(dname.name.iter().count());
    let prefix: Vec<Vec<u8>> = name.iter().take(keep).map(|l| l.to_vec()).collect();
    Name::from_labels(prefix)
        .and_then(|p| p.append_domain(&target))
        .ok()
}

/// A DNAME whose owner is a proper ancestor of `name`.
fn dname_above<'a>(records: &'a [Record], name: &Name) -> Option<&'a Record> {
    records
        .iter()
        .find(|r| u16::from(r.record_type()) == DNAME && r.name != *name && r.name.zone_of(name))
}

/// Follows a chain inside one reply from `start`: returns the records on
/// the chain (CNAME, DNAME with a synthesised CNAME, final RRset), where it
/// ends, and whether it ended at data of `qtype`.
pub(crate) fn follow_chain(
    records: &[Record],
    start: &Name,
    qtype: RecordType,
) -> (Vec<Record>, Name, bool) {
    let mut used = Vec::new();
    let mut cur = start.clone();
    for _ in 0..16 {
        // One pass over the records: the data at `cur`, else its first
        // CNAME.
        let before = used.len();
        let mut cname = None;
        for r in records.iter().filter(|r| same_name(&r.name, &cur)) {
            if r.record_type() == qtype || qtype == RecordType::ANY {
                used.push(r.clone());
            } else if cname.is_none() && r.record_type() == RecordType::CNAME {
                cname = Some(r);
            }
        }
        if used.len() > before {
            return (used, cur, true);
        }
        if let Some(c) = cname {
            let Some(t) = cname_target(c) else { break };
            // A server that synthesised this CNAME from a DNAME sends the
            // DNAME too; the client gets both (RFC 6672 §3.4).
            let dname = dname_above(records, &cur);
            if let Some(d) = dname.filter(|d| !used.contains(*d)) {
                used.push(d.clone());
            }
            used.push(c.clone());
            if used.iter().any(|r| same_name(&r.name, &t)) {
                break;
            }
            cur = t;
            continue;
        }
        // DNAME at a proper ancestor: synthesise the CNAME (RFC 6672 §3.1).
        let dname = dname_above(records, &cur);
        if let Some(d) = dname {
            let Some(new) = dname_synthesis(d, &cur) else {
                break;
            };
            if !used.iter().any(|r| r == d) {
                used.push(d.clone());
            }
            let mut cname = Record::from_rdata(
                cur.clone(),
                d.ttl,
                RData::CNAME(hickory_proto::rr::rdata::CNAME(new.clone())),
            );
            cname.dns_class = DNSClass::IN;
            used.push(cname);
            cur = new;
            continue;
        }
        break;
    }
    (used, cur, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::dnssec::rdata::sig::SigInput;
    use hickory_proto::dnssec::rdata::RRSIG;
    use hickory_proto::dnssec::Algorithm;
    use hickory_proto::op::{MessageType, OpCode, Query};
    use hickory_proto::rr::rdata::{A, CNAME};
    use hickory_proto::rr::SerialNumber;
    use std::str::FromStr;

    fn name(s: &str) -> Name {
        Name::from_str(s).unwrap()
    }

    fn rrsig(owner: &str, covered: RecordType) -> Record {
        let input = SigInput {
            type_covered: covered,
            algorithm: Algorithm::ECDSAP256SHA256,
            num_labels: 3,
            original_ttl: 300,
            sig_expiration: SerialNumber::new(2),
            sig_inception: SerialNumber::new(1),
            key_tag: 1,
            signer_name: name("example.test."),
        };
        Record::from_rdata(
            name(owner),
            300,
            RData::DNSSEC(DNSSECRData::RRSIG(RRSIG::from_sig(input, vec![0; 64]))),
        )
    }

    /// A signed CNAME chain goes into the store whole: each link's data
    /// with its RRSIG, so a later walk through the chain finds the link.
    #[test]
    fn a_signed_chain_is_stored_with_its_signatures() {
        let store = Store::new(1 << 20, 86400);
        let mut m = Message::new(1, MessageType::Response, OpCode::Query);
        m.metadata.authoritative = true;
        m.queries
            .push(Query::query(name("www.example.test."), RecordType::A));
        m.answers = vec![
            Record::from_rdata(
                name("www.example.test."),
                300,
                RData::CNAME(CNAME(name("host.example.test."))),
            ),
            rrsig("www.example.test.", RecordType::CNAME),
            Record::from_rdata(
                name("host.example.test."),
                300,
                RData::A(A::new(192, 0, 2, 1)),
            ),
            rrsig("host.example.test.", RecordType::A),
        ];
        let cut = Delegation {
            zone: name("example.test."),
            child_ns: vec![name("ns1.example.test.")],
            parent_ns: Vec::new(),
        };
        let www = name("www.example.test.");
        let Some(Outcome::Answer {
            records,
            sigs,
            end,
            complete,
            ..
        }) = classify(&store, &m, &cut, &www, RecordType::A)
        else {
            panic!("not an answer");
        };
        assert_eq!(records.len(), 2);
        assert_eq!(sigs.len(), 2);
        assert_eq!(end, name("host.example.test."));
        assert!(complete);
        let link = store
            .get(&www, RecordType::CNAME, Rank::NonAuthAnswer)
            .expect("the link is stored");
        let types: Vec<RecordType> = link.iter().map(|r| r.record_type()).collect();
        assert!(types.contains(&RecordType::CNAME), "{types:?}");
        assert!(types.contains(&RecordType::RRSIG), "{types:?}");
    }
}
