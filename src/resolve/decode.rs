//! Decoding an upstream reply for the walk (RFC 1035 §4.1), lean: what
//! the iterator will not read is stepped over instead of decoded. An
//! answer from NSD or BIND carries the zone's NS set in the authority
//! section and its glue in the additional section; `classify` reads
//! neither when the answer section answers the question, and decoding
//! them with hickory was half the cost of the reply. The transport
//! (`upstream`) matches the reply to its query first and calls [`lean`].

use super::upstream::HEADER_LEN;
use crate::wire::{same_name, skip_name, Cursor};
use hickory_proto::op::{Edns, Header, Message, OpCode, Query};
use hickory_proto::rr::rdata::TSIG;
use hickory_proto::rr::{Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, DecodeError};

/// Decodes a reply to an iterative query, skipping what the iterator
/// will not read: when the answer section holds records of the asked
/// name, type and class (so [`classify`](super::classify::classify) takes it as an
/// answer), the authority records other than SOA, NSEC, NSEC3 and RRSIG
/// (the denial and wildcard proofs an answer may carry) and the
/// additional records other than OPT are stepped over, not decoded.
/// Those are the NS set and glue many servers (NSD, BIND) add to every
/// answer; decoding them was half the cost of decoding the reply.
/// Anything else is decoded whole, as [`Message::from_vec`] does.
pub(super) fn lean(buf: &[u8], asked: &Query) -> Result<Message, DecodeError> {
    let mut d = BinDecoder::new(buf);
    let Header { metadata, counts } = Header::read(&mut d)?;
    if counts.queries != 1 {
        return Message::from_vec(buf);
    }
    let op = metadata.op_code;
    let mut m = Message::new(metadata.id, metadata.message_type, op);
    m.metadata = metadata;
    // `accept` has matched the question against ours, so ours stands for
    // it: the name is stepped over, not decoded again.
    let mut c = Cursor::at(buf, d.index());
    skip_name(&mut c)
        .and_then(|_| c.bytes(4))
        .ok_or(DecodeError::InsufficientBytes)?;
    d.read_slice(c.pos() - d.index())?;
    m.queries.push(asked.clone());
    let answers_at = d.index();
    m.answers = Message::read_records(&mut d, counts.answers as usize, false, op)?.0;
    // An owner compressed to the question (offset 12), as servers write
    // the asked name's records, is the asked name without comparing it.
    let mut c = Cursor::at(buf, answers_at);
    let mut answered = false;
    for r in &m.answers {
        let at_question = buf.get(c.pos()..c.pos() + 2) == Some(&[0xc0, HEADER_LEN as u8][..]);
        skip_record(&mut c).ok_or(DecodeError::InsufficientBytes)?;
        if r.record_type() == asked.query_type()
            && r.dns_class == asked.query_class()
            && (at_question || same_name(&r.name, asked.name()))
        {
            answered = true;
            break;
        }
    }
    let keep_authority = |t: u16| {
        !answered
            || [
                RecordType::SOA,
                RecordType::NSEC,
                RecordType::NSEC3,
                RecordType::RRSIG,
            ]
            .iter()
            .any(|k| u16::from(*k) == t)
    };
    m.authorities = read_some(&mut d, buf, counts.authorities, false, op, keep_authority)?.0;
    let (additionals, edns, signature) =
        read_some(&mut d, buf, counts.additionals, true, op, |t| {
            !answered || t == u16::from(RecordType::OPT)
        })?;
    m.additionals = additionals;
    m.signature = signature;
    // As hickory does: the OPT record carries the RCODE's upper bits.
    if let Some(e) = &edns {
        m.metadata.merge_response_code(e.rcode_high());
    }
    m.edns = edns;
    Ok(m)
}

/// What [`Message::read_records`] returns.
type Section = (Vec<Record>, Option<Edns>, Option<Box<Record<TSIG>>>);

/// Reads `count` records, decoding those whose type `keep` accepts and
/// stepping over the rest (their names, fixed fields and RDATA, checked
/// for length only).
fn read_some(
    d: &mut BinDecoder<'_>,
    buf: &[u8],
    count: u16,
    additional: bool,
    op: OpCode,
    keep: impl Fn(u16) -> bool,
) -> Result<Section, DecodeError> {
    let mut out: Section = (Vec::new(), None, None);
    for _ in 0..count {
        // As hickory: nothing may follow a TSIG.
        if out.2.is_some() {
            return Err(DecodeError::RecordAfterSig);
        }
        let start = d.index();
        let mut c = Cursor::at(buf, start);
        let skipped = skip_record(&mut c).ok_or(DecodeError::InsufficientBytes)?;
        if keep(skipped) {
            let (records, edns, sig) = Message::read_records(d, 1, additional, op)?;
            out.0.extend(records);
            if edns.is_some() {
                if out.1.is_some() {
                    return Err(DecodeError::DuplicateEdns);
                }
                out.1 = edns;
            }
            if sig.is_some() {
                out.2 = sig;
            }
        } else {
            d.read_slice(c.pos() - start)?;
        }
    }
    Ok(out)
}

/// Steps over one resource record, checking only its lengths; its type.
fn skip_record(c: &mut Cursor<'_>) -> Option<u16> {
    skip_name(c)?;
    let rtype = c.u16()?;
    c.bytes(6)?;
    let rdlen = c.u16()?;
    c.bytes(usize::from(rdlen))?;
    Some(rtype)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{MessageType, ResponseCode};
    use hickory_proto::rr::rdata::{A, NS, SOA};
    use hickory_proto::rr::{Name, RData};
    use std::str::FromStr;

    fn name(s: &str) -> Name {
        Name::from_str(s).unwrap()
    }

    /// A reply as NSD sends it: the answer, the zone's NS set, its glue,
    /// an OPT record.
    fn reply(qname: &str, qtype: RecordType, answer: Vec<Record>) -> Message {
        let mut m = Message::new(7, MessageType::Response, OpCode::Query);
        m.metadata.authoritative = true;
        m.queries.push(Query::query(name(qname), qtype));
        m.answers = answer;
        m.authorities.push(Record::from_rdata(
            name("bench.test."),
            300,
            RData::NS(NS(name("ns1.bench.test."))),
        ));
        m.additionals.push(Record::from_rdata(
            name("ns1.bench.test."),
            300,
            RData::A(A::new(127, 0, 0, 3)),
        ));
        m.edns = Some(Edns::new());
        m
    }

    fn a(owner: &str) -> Record {
        Record::from_rdata(name(owner), 60, RData::A(A::new(10, 0, 0, 1)))
    }

    #[test]
    fn lean_decode_skips_ns_and_glue_of_an_answer() {
        let sent = reply("h1.bench.test.", RecordType::A, vec![a("H1.Bench.test.")]);
        let m = lean(&sent.to_vec().unwrap(), &sent.queries[0]).unwrap();
        assert_eq!(m.answers, sent.answers);
        assert!(m.authorities.is_empty(), "{:?}", m.authorities);
        assert!(m.additionals.is_empty(), "{:?}", m.additionals);
        assert!(m.edns.is_some());
        assert!(m.metadata.authoritative);
    }

    #[test]
    fn lean_decode_keeps_everything_unless_the_question_is_answered() {
        // Wrong type, wrong owner, nothing at all: classify reads the
        // authority and additional sections then, so they are decoded.
        for answer in [vec![], vec![a("other.bench.test.")]] {
            let sent = reply("h1.bench.test.", RecordType::A, answer);
            let m = lean(&sent.to_vec().unwrap(), &sent.queries[0]).unwrap();
            assert_eq!(m, Message::from_vec(&sent.to_vec().unwrap()).unwrap());
        }
        let sent = reply(
            "h1.bench.test.",
            RecordType::AAAA,
            vec![a("h1.bench.test.")],
        );
        let m = lean(&sent.to_vec().unwrap(), &sent.queries[0]).unwrap();
        assert_eq!(m.authorities.len(), 1);
        assert_eq!(m.additionals.len(), 1);
    }

    #[test]
    fn lean_decode_keeps_the_soa_of_an_answer_with_nxdomain() {
        let mut sent = reply("h1.bench.test.", RecordType::A, vec![a("h1.bench.test.")]);
        sent.metadata.response_code = ResponseCode::NXDomain;
        sent.authorities.push(Record::from_rdata(
            name("bench.test."),
            300,
            RData::SOA(SOA::new(
                name("ns1.bench.test."),
                name("admin.bench.test."),
                1,
                2,
                3,
                4,
                5,
            )),
        ));
        let m = lean(&sent.to_vec().unwrap(), &sent.queries[0]).unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(m.authorities.len(), 1);
        assert_eq!(m.authorities[0].record_type(), RecordType::SOA);
    }

    #[test]
    fn lean_decode_rejects_a_skipped_record_cut_short() {
        let sent = reply("h1.bench.test.", RecordType::A, vec![a("h1.bench.test.")]);
        let wire = sent.to_vec().unwrap();
        // Every truncation fails to decode, as with hickory's decoder.
        for len in HEADER_LEN..wire.len() {
            assert!(
                lean(&wire[..len], &sent.queries[0]).is_err(),
                "cut at {len}"
            );
        }
    }
}
