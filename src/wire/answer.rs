//! An answer in wire form, ready to be copied into any client's reply.
//!
//! Every reply resolvd sends for a question it could read goes through
//! [`WireAnswer::write_reply`]: fresh resolutions, cache hits, local zones
//! and failures alike, so there is one place that gets the header, letter
//! case, TTL aging (RFC 1035 §6.1.2 / RFC 2308 §5), OPT (RFC 6891), EDE
//! (RFC 8914), ECS scope (RFC 7871 §7.2.1) and truncation right.
//!
//! The message is encoded once with its question at offset 12. Because a
//! client's question has the same wire length as the stored one (same name,
//! case aside), compression pointers stay valid when the client's question
//! bytes are pasted over it: a hit is a memcpy plus a few TTL patches.

use super::query::Query;
use super::{skip_name, Cursor, OPT};
use crate::validate::Security;
use crate::wire::query::rcode;
use hickory_proto::op::{Message, MessageType, OpCode, Query as HQuery, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, Record, RecordType};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

/// An Extended DNS Error (RFC 8914): info code and text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ede {
    /// INFO-CODE, e.g. 3 Stale Answer, 22 No Reachable Authority.
    pub code: u16,
    /// EXTRA-TEXT.
    pub text: String,
}

/// A complete answer to one (name, type) question, stored as wire bytes.
#[derive(Debug)]
pub struct WireAnswer {
    /// Header (ID 0) + question + answer/authority/additional (no OPT),
    /// followed by the offset of every record's TTL as big-endian u16s:
    /// one allocation per answer, since a cache holds millions of them.
    data: Box<[u8]>,
    /// Length of the message part of `data`.
    msg_len: u16,
    /// Offset just past the question.
    question_end: u16,
    /// When the TTLs in the message were current, in milliseconds since
    /// [`epoch`] (8 bytes where an `Instant` takes 16, per cached answer).
    stored_at: u64,
    /// Lifetime: the smallest TTL in the message (RFC 2181 §5.2, 2308 §5).
    pub ttl: u32,
    /// RCODE (4 bits; extended codes are never stored).
    pub rcode: u16,
    /// AA flag: set for local zones only.
    pub authoritative: bool,
    /// Extended DNS error to attach when the client speaks EDNS (boxed:
    /// rare, and an inline String would grow every entry).
    pub ede: Option<Box<Ede>>,
    /// ECS scope prefix to echo, when the answer depended on the subnet.
    pub ecs_scope: Option<u8>,
    /// Set once a prefetch for this entry has begun, so a hot entry is
    /// refreshed once, not once per hit.
    pub prefetch_started: AtomicBool,
    /// DNSSEC verdict: `Secure` sets AD for clients that ask (RFC 6840
    /// §5.7–5.8); `Bogus` answers SERVFAIL unless the client set CD.
    pub security: Security,
    /// The same answer with its RRSIG/NSEC/NSEC3 records, in the layout of
    /// `data`, for DO=1 clients (RFC 4035 §3.2.1); None when there are
    /// none. Two encodings rather than skipped byte ranges, because
    /// removing records would break later compression pointers.
    dnssec: Option<Box<[u8]>>,
    /// Length of the message part of `dnssec`.
    dnssec_msg_len: u16,
}

/// How a reply is being sent.
#[derive(Debug, Clone, Copy)]
pub struct ReplyContext {
    /// Largest reply allowed: the client's UDP size, or 65535 on TCP.
    pub limit: usize,
    /// Our advertised UDP payload size for the OPT record.
    pub our_payload: u16,
    /// Serve expired data with TTL 30 and EDE 3 (RFC 8767 §4).
    pub stale: bool,
    /// The COOKIE option for the reply (client cookie + our server
    /// cookie), when the query had one (RFC 7873 §5.2).
    pub cookie: Option<crate::cookies::ReplyCookie>,
    /// Pad the reply to a multiple of [`PAD_BLOCK`] (RFC 8467 §4.1): the
    /// query was padded and came over an encrypted transport.
    pub pad: bool,
}

/// Block length for padded replies: RFC 8467 §4.1's recommended
/// Block-Length Padding strategy for responses.
pub const PAD_BLOCK: usize = 468;

/// The process's reference point for stored times.
fn epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Milliseconds from [`epoch`] to `t` (0 for earlier instants).
fn millis(t: Instant) -> u64 {
    t.saturating_duration_since(epoch()).as_millis() as u64
}

/// TTL given to stale answers (RFC 8767 §4 recommends 30 seconds).
pub const STALE_TTL: u32 = 30;

/// The sections of an answer before encoding.
#[derive(Debug, Clone, Default)]
pub struct Sections {
    /// RCODE.
    pub rcode: u16,
    /// AA flag.
    pub authoritative: bool,
    /// Answer section.
    pub answer: Vec<Record>,
    /// Authority section.
    pub authority: Vec<Record>,
    /// Additional section (never OPT).
    pub additional: Vec<Record>,
    /// Extended error.
    pub ede: Option<Ede>,
    /// ECS scope, for local geo answers.
    pub ecs_scope: Option<u8>,
    /// DNSSEC verdict (RFC 4035 §4.3); `Unchecked` when not validated.
    pub security: Security,
}

impl Sections {
    /// An answer with no records and this RCODE.
    pub fn error(rcode: u16, ede: Option<Ede>) -> Sections {
        Sections {
            rcode,
            ede,
            ..Sections::default()
        }
    }
}

/// Encoding failed: a name or record hickory cannot write.
#[derive(Debug, thiserror::Error)]
#[error("cannot encode answer: {0}")]
pub struct EncodeError(String);

impl WireAnswer {
    /// Encodes `s` as the answer to (`qname`, `qtype`), class IN.
    pub fn encode(qname: &Name, qtype: RecordType, s: Sections) -> Result<WireAnswer, EncodeError> {
        let security = s.security;
        // RFC 4035 §3.2.1: without DO, RRSIG/NSEC/NSEC3 are left out
        // unless they were asked for.
        let dnssec_only = |r: &Record| r.record_type() != qtype && is_dnssec_meta(r.record_type());
        let has_dnssec = s
            .answer
            .iter()
            .chain(&s.authority)
            .chain(&s.additional)
            .any(dnssec_only);
        let full = if has_dnssec {
            let sections = Sections {
                answer: s.answer.clone(),
                authority: s.authority.clone(),
                additional: s.additional.clone(),
                ede: None,
                ..s
            };
            let f = Self::encode_plain(qname, qtype, sections)?;
            Some((f.data, f.msg_len))
        } else {
            None
        };
        let mut w = if has_dnssec {
            let keep = |v: Vec<Record>| -> Vec<Record> {
                v.into_iter().filter(|r| !dnssec_only(r)).collect()
            };
            Self::encode_plain(
                qname,
                qtype,
                Sections {
                    answer: keep(s.answer),
                    authority: keep(s.authority),
                    additional: keep(s.additional),
                    ..s
                },
            )?
        } else {
            Self::encode_plain(qname, qtype, s)?
        };
        w.security = security;
        if let Some((data, len)) = full {
            w.dnssec = Some(data);
            w.dnssec_msg_len = len;
        }
        Ok(w)
    }

    fn encode_plain(
        qname: &Name,
        qtype: RecordType,
        s: Sections,
    ) -> Result<WireAnswer, EncodeError> {
        let ttl = s.answer.iter().chain(&s.authority).map(|r| r.ttl).min();
        let (rcode, authoritative) = (s.rcode, s.authoritative);
        let (ede, ecs_scope, security) = (s.ede, s.ecs_scope, s.security);
        let sections = [s.answer, s.authority, s.additional];
        let (bytes, question_end, ttl_offsets) =
            match simple_message(qname, qtype, rcode, authoritative, &sections) {
                Some(m) => m,
                None => Self::hickory_message(qname, qtype, rcode, authoritative, sections)?,
            };
        let msg_len = bytes.len();
        let mut data = bytes;
        data.reserve_exact(ttl_offsets.len() * 2);
        for off in ttl_offsets {
            data.extend_from_slice(&off.to_be_bytes());
        }
        Ok(WireAnswer {
            data: data.into_boxed_slice(),
            msg_len: msg_len as u16,
            question_end: question_end as u16,
            stored_at: millis(Instant::now()),
            ttl: ttl.unwrap_or(0),
            rcode,
            authoritative,
            ede: ede.map(Box::new),
            ecs_scope,
            prefetch_started: AtomicBool::new(false),
            security,
            dnssec: None,
            dnssec_msg_len: 0,
        })
    }

    /// The message through hickory's encoder (any records, names
    /// compressed), with where its question ends and its TTLs sit.
    fn hickory_message(
        qname: &Name,
        qtype: RecordType,
        rcode: u16,
        authoritative: bool,
        [answer, authority, additional]: [Vec<Record>; 3],
    ) -> Result<(Vec<u8>, usize, Vec<u16>), EncodeError> {
        let mut m = Message::new(0, MessageType::Response, OpCode::Query);
        m.metadata.response_code = ResponseCode::from_low(rcode as u8);
        m.metadata.authoritative = authoritative;
        let mut q = HQuery::query(qname.clone(), qtype);
        q.set_query_class(DNSClass::IN);
        m.add_query(q);
        m.insert_answers(answer);
        m.insert_authorities(authority);
        m.insert_additionals(additional);
        let bytes = m.to_vec().map_err(|e| EncodeError(e.to_string()))?;
        if bytes.len() > u16::MAX as usize {
            return Err(EncodeError("message over 65535 bytes".into()));
        }
        let (question_end, ttl_offsets) =
            ttl_offsets(&bytes).ok_or_else(|| EncodeError("unreadable encoding".into()))?;
        Ok((bytes, question_end, ttl_offsets))
    }

    /// A header-only answer with no question; cannot fail, so it is the
    /// last resort when encoding does.
    pub fn bare(rcode: u16) -> WireAnswer {
        WireAnswer {
            data: vec![0u8; 12].into_boxed_slice(),
            msg_len: 12,
            question_end: 12,
            stored_at: millis(Instant::now()),
            ttl: 0,
            rcode,
            authoritative: false,
            ede: None,
            ecs_scope: None,
            prefetch_started: AtomicBool::new(false),
            security: Security::Unchecked,
            dnssec: None,
            dnssec_msg_len: 0,
        }
    }

    /// The message as stored: ID 0, the question, the records with their
    /// TTLs as they were [`WireAnswer::age_millis`] ago; no OPT. For the
    /// shared cache (`cache_l2`), which ships it to other instances.
    pub fn message(&self) -> &[u8] {
        self.data.get(..self.msg_len as usize).unwrap_or(&[])
    }

    /// Milliseconds since the TTLs in [`WireAnswer::message`] were current.
    pub fn age_millis(&self, now: Instant) -> u64 {
        millis(now).saturating_sub(self.stored_at)
    }

    /// The DNSSEC variant of [`WireAnswer::message`] (RRSIG, NSEC and
    /// NSEC3 records kept, for DO=1 clients), when the answer has one.
    pub fn dnssec_message(&self) -> Option<&[u8]> {
        self.dnssec
            .as_ref()
            .and_then(|d| d.get(..self.dnssec_msg_len as usize))
    }

    /// Rebuilds an answer from messages another instance stored
    /// ([`WireAnswer::message`] and [`WireAnswer::dnssec_message`]), `age`
    /// seconds old: every TTL is lowered by `age` and the entry lives
    /// `ttl` seconds from now. None when the bytes are not one question
    /// and well-formed records (the input is untrusted).
    pub fn from_shared(
        msg: &[u8],
        dnssec_msg: Option<&[u8]>,
        age: u32,
        ttl: u32,
        rcode: u16,
        security: Security,
    ) -> Option<WireAnswer> {
        let (data, question_end) = aged_layout(msg, age)?;
        let dnssec = match dnssec_msg {
            None => None,
            Some(m) => {
                let (d, qend) = aged_layout(m, age)?;
                // Both encodings answer the same question.
                if qend != question_end || m.get(12..qend) != msg.get(12..question_end) {
                    return None;
                }
                Some((d, m.len() as u16))
            }
        };
        Some(WireAnswer {
            data,
            msg_len: msg.len() as u16,
            question_end: question_end as u16,
            stored_at: millis(Instant::now()),
            ttl,
            rcode,
            authoritative: false,
            ede: None,
            ecs_scope: None,
            prefetch_started: AtomicBool::new(false),
            security,
            dnssec_msg_len: dnssec.as_ref().map_or(0, |d| d.1),
            dnssec: dnssec.map(|d| d.0),
        })
    }

    /// Bytes held, for the cache's weigher.
    pub fn size(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.data.len()
            + self.dnssec.as_ref().map_or(0, |d| d.len())
            + self
                .ede
                .as_ref()
                .map_or(0, |e| std::mem::size_of::<Ede>() + e.text.len())
    }

    /// Whole seconds since the answer was stored.
    fn age(&self, now: Instant) -> u64 {
        millis(now).saturating_sub(self.stored_at) / 1000
    }

    /// Seconds left before expiry at `now` (0 when expired).
    pub fn remaining(&self, now: Instant) -> u32 {
        (self.ttl as u64).saturating_sub(self.age(now)) as u32
    }

    /// How long ago the entry expired (zero while live).
    pub fn expired_for(&self, now: Instant) -> std::time::Duration {
        let expiry = self.stored_at + self.ttl as u64 * 1000;
        std::time::Duration::from_millis(millis(now).saturating_sub(expiry))
    }

    /// Whether this answers the cache key `key` (lower-cased wire name +
    /// QTYPE): the cache is indexed by a hash of the key, so a hit is
    /// confirmed against the stored question.
    pub fn answers_key(&self, key: &[u8]) -> bool {
        let qend = self.question_end as usize;
        let (Some(name), Some(qtype)) = (
            self.data.get(12..qend.saturating_sub(4)),
            self.data
                .get(qend.saturating_sub(4)..qend.saturating_sub(2)),
        ) else {
            return false;
        };
        let (key_name, key_type) = key.split_at(key.len().saturating_sub(2));
        // Letters fold, the type does not (QTYPE 65 must not match 97).
        name.eq_ignore_ascii_case(key_name) && qtype == key_type
    }

    /// The stored question's wire name (lower case).
    pub fn question_name(&self) -> &[u8] {
        self.data
            .get(12..(self.question_end as usize).saturating_sub(4))
            .unwrap_or(&[])
    }

    /// The stored question's QTYPE.
    pub fn question_type(&self) -> u16 {
        let qend = self.question_end as usize;
        self.data
            .get(qend.saturating_sub(4)..qend.saturating_sub(2))
            .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]))
    }

    /// Whether the entry has lived past its TTL.
    pub fn expired(&self, now: Instant) -> bool {
        self.remaining(now) == 0
    }

    /// Writes the reply to `q` into `out` (cleared first). No allocation
    /// once `out` has grown to a typical reply size.
    pub fn write_reply(&self, q: &Query<'_>, now: Instant, ctx: ReplyContext, out: &mut Vec<u8>) {
        out.clear();
        let dnssec_ok = q.edns.is_some_and(|e| e.dnssec_ok);
        let checking_disabled = q.flags & FLAG_CD != 0;
        if self.security == Security::Bogus && !checking_disabled {
            // RFC 4035 §5.5: bogus data is not given to a validating
            // resolver's clients; the EDE says why.
            self.write_bogus(q, ctx, out);
            return;
        }
        let (data, msg_len) = match (&self.dnssec, dnssec_ok) {
            (Some(d), true) => (d, self.dnssec_msg_len),
            _ => (&self.data, self.msg_len),
        };
        let (msg, offsets) = data.split_at(msg_len as usize);
        out.extend_from_slice(msg);
        let age = u32::try_from(self.age(now)).unwrap_or(u32::MAX);
        for off in offsets.chunks_exact(2) {
            let off = u16::from_be_bytes([off[0], off[1]]) as usize;
            if let Some(field) = out.get_mut(off..off + 4) {
                let orig = u32::from_be_bytes([field[0], field[1], field[2], field[3]]);
                let ttl = if ctx.stale {
                    STALE_TTL
                } else {
                    orig.saturating_sub(age)
                };
                field.copy_from_slice(&ttl.to_be_bytes());
            }
        }
        // The client's question bytes keep its letter case (0x20 clients
        // compare them). Equal length is guaranteed by the key match.
        if let Some(dst) = out.get_mut(12..self.question_end as usize) {
            if dst.len() == q.question.len() {
                dst.copy_from_slice(q.question);
            }
        }
        let mut flags = reply_flags(q.flags, self.authoritative, self.rcode);
        // RFC 6840 §5.8: AD only for clients that signal they understand
        // it, with DO or AD in the query.
        if self.security == Security::Secure && (dnssec_ok || q.flags & FLAG_AD != 0) {
            flags |= FLAG_AD;
        }
        set_header(out, q.id, flags);
        let ede = if ctx.stale {
            Some((3u16, "serve-stale"))
        } else {
            self.ede.as_ref().map(|e| (e.code, e.text.as_str()))
        };
        let opt = q.edns.map(|e| OptRr {
            payload: ctx.our_payload,
            ext_rcode: 0,
            dnssec_ok: e.dnssec_ok,
            ede,
            // RFC 7871 §7.2.1: echo ECS; scope 0 says the answer does not
            // depend on the client's subnet.
            ecs: e
                .ecs
                .map(|c| (c, self.ecs_scope.unwrap_or(0).min(c.source_prefix))),
            cookie: ctx.cookie.as_ref(),
        });
        if let Some(o) = &opt {
            o.append(out);
        }
        if out.len() > ctx.limit {
            out.truncate(self.question_end as usize);
            set_counts(out, 0, 0, 0);
            set_header(out, q.id, flags | 0x0200);
            if let Some(o) = &opt {
                o.append(out);
            }
        }
        if ctx.pad {
            pad_reply(out, PAD_BLOCK, ctx.limit);
        }
    }
}

impl WireAnswer {
    /// SERVFAIL with the validation failure's EDE, for a bogus answer.
    fn write_bogus(&self, q: &Query<'_>, ctx: ReplyContext, out: &mut Vec<u8>) {
        out.extend_from_slice(self.data.get(..self.question_end as usize).unwrap_or(&[]));
        if let Some(dst) = out.get_mut(12..self.question_end as usize) {
            if dst.len() == q.question.len() {
                dst.copy_from_slice(q.question);
            }
        }
        set_counts(out, 0, 0, 0);
        set_header(out, q.id, reply_flags(q.flags, false, rcode::SERVFAIL));
        let opt = q.edns.map(|e| OptRr {
            payload: ctx.our_payload,
            ext_rcode: 0,
            dnssec_ok: e.dnssec_ok,
            ede: self.ede.as_ref().map(|e| (e.code, e.text.as_str())),
            ecs: None,
            cookie: ctx.cookie.as_ref(),
        });
        if let Some(o) = &opt {
            o.append(out);
        }
        if ctx.pad {
            pad_reply(out, PAD_BLOCK, ctx.limit);
        }
    }
}

/// AD: authentic data (RFC 4035 §3.2.3).
const FLAG_AD: u16 = 0x0020;
/// CD: checking disabled (RFC 4035 §3.2.2).
const FLAG_CD: u16 = 0x0010;

/// Record types that exist only to prove other data (RFC 4035 §3.2.1).
fn is_dnssec_meta(t: RecordType) -> bool {
    matches!(t, RecordType::RRSIG | RecordType::NSEC | RecordType::NSEC3)
}

/// Adds an EDNS Padding option (RFC 7830 §3) to the OPT record of the
/// finished reply in `out`, so its length becomes a multiple of `block`.
/// Works on any reply by walking it, not on what the writer remembers;
/// does nothing (returns false) when the reply has no OPT, cannot be
/// walked, or padding would push it past `limit` (RFC 8467 §4.1: then
/// the reply goes unpadded rather than truncated).
pub fn pad_reply(out: &mut Vec<u8>, block: usize, limit: usize) -> bool {
    let Some((rdlen_at, rdata_end)) = find_opt(out) else {
        return false;
    };
    if block == 0 {
        return false;
    }
    // The option header alone is 4 bytes; the padding fills the rest.
    let padded = (out.len() + 4).div_ceil(block) * block;
    if padded > limit.min(u16::MAX as usize) {
        return false;
    }
    let fill = padded - out.len() - 4;
    let Some(rdlen) = out
        .get(rdlen_at..rdlen_at + 2)
        .map(|f| u16::from_be_bytes([f[0], f[1]]) as usize)
    else {
        return false;
    };
    let (Ok(new_rdlen), Ok(fill16)) = (u16::try_from(rdlen + 4 + fill), u16::try_from(fill)) else {
        return false;
    };
    let mut opt = Vec::with_capacity(4 + fill);
    opt.extend_from_slice(&super::query::OPTION_PADDING.to_be_bytes());
    opt.extend_from_slice(&fill16.to_be_bytes());
    // RFC 7830 §3: the padding octets SHOULD be 0x00.
    opt.resize(4 + fill, 0);
    out.splice(rdata_end..rdata_end, opt);
    if let Some(f) = out.get_mut(rdlen_at..rdlen_at + 2) {
        f.copy_from_slice(&new_rdlen.to_be_bytes());
    }
    true
}

/// Offset of the OPT record's RDLENGTH and of the end of its RDATA.
fn find_opt(msg: &[u8]) -> Option<(usize, usize)> {
    let (mut c, counts) = after_question(msg)?;
    for _ in 0..counts.iter().sum::<usize>() {
        let r = read_record(&mut c)?;
        if r.rtype == OPT {
            return Some((r.rdlen_at, c.pos()));
        }
    }
    None
}

/// The smallest TTL among the answer and authority records of a reply
/// (for DoH's Cache-Control, RFC 8484 §5.1: a negative answer's SOA
/// counts, so NXDOMAIN is cached as long as the DNS cache would); None
/// when there are none or the reply cannot be walked.
pub fn min_ttl(msg: &[u8]) -> Option<u32> {
    let (mut c, [an, ns, _]) = after_question(msg)?;
    let mut min: Option<u32> = None;
    for _ in 0..an + ns {
        let r = read_record(&mut c)?;
        if r.rtype != OPT {
            let ttl = msg.get(r.ttl_at..r.ttl_at + 4)?;
            let ttl = u32::from_be_bytes([ttl[0], ttl[1], ttl[2], ttl[3]]);
            min = Some(min.map_or(ttl, |m| m.min(ttl)));
        }
    }
    min
}

/// QR=1, opcode and RD/CD from the query, RA=1, AA and RCODE as given.
pub fn reply_flags(query_flags: u16, aa: bool, rcode: u16) -> u16 {
    // Opcode (0x7800), RD (0x0100) and CD (0x0010) are echoed.
    0x8000 | (query_flags & 0x7910) | ((aa as u16) << 10) | 0x0080 | (rcode & 0xf)
}

fn set_header(out: &mut [u8], id: u16, flags: u16) {
    if let Some(h) = out.get_mut(0..4) {
        h[0..2].copy_from_slice(&id.to_be_bytes());
        h[2..4].copy_from_slice(&flags.to_be_bytes());
    }
}

fn set_counts(out: &mut [u8], an: u16, ns: u16, ar: u16) {
    if let Some(h) = out.get_mut(6..12) {
        h[0..2].copy_from_slice(&an.to_be_bytes());
        h[2..4].copy_from_slice(&ns.to_be_bytes());
        h[4..6].copy_from_slice(&ar.to_be_bytes());
    }
}

/// The OPT pseudo-record we add to replies.
pub(crate) struct OptRr<'a> {
    pub(crate) payload: u16,
    pub(crate) ext_rcode: u8,
    pub(crate) dnssec_ok: bool,
    pub(crate) ede: Option<(u16, &'a str)>,
    pub(crate) ecs: Option<(super::query::ClientSubnet, u8)>,
    pub(crate) cookie: Option<&'a crate::cookies::ReplyCookie>,
}

impl OptRr<'_> {
    /// Appends the OPT record and bumps ARCOUNT.
    pub(crate) fn append(&self, out: &mut Vec<u8>) {
        out.push(0);
        out.extend_from_slice(&OPT.to_be_bytes());
        out.extend_from_slice(&self.payload.to_be_bytes());
        out.push(self.ext_rcode);
        out.push(0);
        out.extend_from_slice(&(if self.dnssec_ok { 0x8000u16 } else { 0 }).to_be_bytes());
        let rdlen_at = out.len();
        out.extend_from_slice(&[0, 0]);
        if let Some((code, text)) = self.ede {
            let text = &text.as_bytes()[..text.len().min(200)];
            out.extend_from_slice(&15u16.to_be_bytes());
            out.extend_from_slice(&((2 + text.len()) as u16).to_be_bytes());
            out.extend_from_slice(&code.to_be_bytes());
            out.extend_from_slice(text);
        }
        if let Some((c, scope)) = self.ecs {
            let (family, bytes): (u16, Vec<u8>) = match c.addr {
                std::net::IpAddr::V4(a) => (1, a.octets().to_vec()),
                std::net::IpAddr::V6(a) => (2, a.octets().to_vec()),
            };
            let n = (c.source_prefix as usize).div_ceil(8).min(bytes.len());
            out.extend_from_slice(&8u16.to_be_bytes());
            out.extend_from_slice(&((4 + n) as u16).to_be_bytes());
            out.extend_from_slice(&family.to_be_bytes());
            out.push(c.source_prefix);
            out.push(scope);
            out.extend_from_slice(&bytes[..n]);
        }
        if let Some(c) = self.cookie {
            out.extend_from_slice(&10u16.to_be_bytes());
            out.extend_from_slice(&(c.len() as u16).to_be_bytes());
            out.extend_from_slice(c);
        }
        let rdlen = (out.len() - rdlen_at - 2) as u16;
        if let Some(f) = out.get_mut(rdlen_at..rdlen_at + 2) {
            f.copy_from_slice(&rdlen.to_be_bytes());
        }
        if let Some(f) = out.get_mut(10..12) {
            let ar = u16::from_be_bytes([f[0], f[1]]).saturating_add(1);
            f.copy_from_slice(&ar.to_be_bytes());
        }
    }
}

/// `msg` (one question, well-formed records) with every TTL lowered by
/// `age`, followed by its TTL offsets as [`WireAnswer`] keeps it; and
/// the end of its question.
fn aged_layout(msg: &[u8], age: u32) -> Option<(Box<[u8]>, usize)> {
    if msg.len() > u16::MAX as usize || msg.get(4..6) != Some(&[0, 1][..]) {
        return None;
    }
    let (question_end, offsets) = ttl_offsets(msg)?;
    let mut data = Vec::with_capacity(msg.len() + offsets.len() * 2);
    data.extend_from_slice(msg);
    for &off in &offsets {
        let field = data.get_mut(off as usize..off as usize + 4)?;
        let t = u32::from_be_bytes([field[0], field[1], field[2], field[3]]);
        field.copy_from_slice(&t.saturating_sub(age).to_be_bytes());
    }
    for off in offsets {
        data.extend_from_slice(&off.to_be_bytes());
    }
    Some((data.into_boxed_slice(), question_end))
}

/// Finds the end of the question and the offset of every TTL (skipping
/// OPT, whose TTL field is flags, not a TTL).
/// The message for the commonest answer written directly, byte for byte
/// what hickory's encoder writes for it: NOERROR, only address records,
/// each owned by the question name exactly as asked (so hickory would
/// point each owner at the question, 0xC00C). A cold query's answer is
/// usually this, and hickory's general encoder (name-compression table,
/// per-record dispatch) plus re-reading its output for the TTL offsets
/// cost ~5,000 instructions of a ~64,000-instruction cold query. None for
/// anything else, which goes through hickory.
fn simple_message(
    qname: &Name,
    qtype: RecordType,
    rcode: u16,
    authoritative: bool,
    [answer, authority, additional]: &[Vec<Record>; 3],
) -> Option<(Vec<u8>, usize, Vec<u16>)> {
    if rcode != 0 || !authority.is_empty() || !additional.is_empty() {
        return None;
    }
    let count = u16::try_from(answer.len()).ok().filter(|&n| n > 0)?;
    let mut out = Vec::with_capacity(12 + 260 + answer.len() * 28);
    let aa = if authoritative { 0x04 } else { 0 };
    out.extend_from_slice(&[0, 0, 0x80 | aa, 0, 0, 1]);
    out.extend_from_slice(&count.to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    for label in qname.iter() {
        out.push(u8::try_from(label.len()).ok()?);
        out.extend_from_slice(label);
    }
    out.push(0);
    // hickory writes a root owner as its one zero byte, not a pointer.
    if qname.is_root() || out.len() > 12 + 255 {
        return None;
    }
    out.extend_from_slice(&u16::from(qtype).to_be_bytes());
    out.extend_from_slice(&u16::from(DNSClass::IN).to_be_bytes());
    let question_end = out.len();
    let mut ttls = Vec::with_capacity(answer.len());
    for r in answer {
        let rdata: &[u8] = match &r.data {
            hickory_proto::rr::RData::A(a) => &a.0.octets(),
            hickory_proto::rr::RData::AAAA(a) => &a.0.octets(),
            _ => return None,
        };
        let same_owner = r.name.is_fqdn() == qname.is_fqdn()
            && r.name.num_labels() == qname.num_labels()
            && r.name.iter().zip(qname.iter()).all(|(a, b)| a == b);
        if !same_owner || r.dns_class != DNSClass::IN {
            return None;
        }
        out.extend_from_slice(&[0xC0, 12]);
        out.extend_from_slice(&u16::from(r.record_type()).to_be_bytes());
        out.extend_from_slice(&u16::from(DNSClass::IN).to_be_bytes());
        ttls.push(u16::try_from(out.len()).ok()?);
        out.extend_from_slice(&r.ttl.to_be_bytes());
        out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        out.extend_from_slice(rdata);
    }
    Some((out, question_end, ttls))
}

fn ttl_offsets(msg: &[u8]) -> Option<(usize, Vec<u16>)> {
    let (mut c, counts) = after_question(msg)?;
    let question_end = c.pos();
    let total = counts.iter().sum::<usize>();
    let mut offs = Vec::with_capacity(total);
    for _ in 0..total {
        let r = read_record(&mut c)?;
        if r.rtype != OPT {
            offs.push(u16::try_from(r.ttl_at).ok()?);
        }
    }
    Some((question_end, offs))
}

/// A cursor at the first record of `msg` (header and question skipped)
/// and the answer, authority and additional counts.
fn after_question(msg: &[u8]) -> Option<(Cursor<'_>, [usize; 3])> {
    let mut c = Cursor::new(msg);
    c.bytes(4)?;
    let qd = c.u16()?;
    let counts = [c.u16()? as usize, c.u16()? as usize, c.u16()? as usize];
    for _ in 0..qd {
        skip_name(&mut c)?;
        c.bytes(4)?;
    }
    Some((c, counts))
}

/// Where one record's fields sit, found by walking past it.
struct RecordAt {
    rtype: u16,
    ttl_at: usize,
    rdlen_at: usize,
}

/// Reads one record (owner, type, class, TTL, RDATA) and returns where its
/// fields are; the cursor ends after it.
fn read_record(c: &mut Cursor<'_>) -> Option<RecordAt> {
    skip_name(c)?;
    let rtype = c.u16()?;
    c.bytes(2)?;
    let ttl_at = c.pos();
    c.bytes(4)?;
    let rdlen_at = c.pos();
    let rdlen = c.u16()? as usize;
    c.bytes(rdlen)?;
    Some(RecordAt {
        rtype,
        ttl_at,
        rdlen_at,
    })
}

/// Writes a header-only error reply (plus the question when readable and an
/// OPT when the query had one, with `cookie` in it when given) for a packet
/// that [`Query::parse`] rejected or that gets an error RCODE.
pub fn write_error(
    pkt: &[u8],
    code: u16,
    question_end: usize,
    edns: Option<super::query::Edns>,
    our_payload: u16,
    cookie: Option<&crate::cookies::ReplyCookie>,
    out: &mut Vec<u8>,
) {
    out.clear();
    let (id, qflags) = match pkt.get(0..4) {
        Some(h) => (
            u16::from_be_bytes([h[0], h[1]]),
            u16::from_be_bytes([h[2], h[3]]),
        ),
        None => return,
    };
    let question = pkt.get(12..question_end).unwrap_or(&[]);
    out.extend_from_slice(&[0; 12]);
    set_header(out, id, reply_flags(qflags, false, code));
    if let Some(f) = out.get_mut(4..6) {
        f.copy_from_slice(&(!question.is_empty() as u16).to_be_bytes());
    }
    out.extend_from_slice(question);
    // BADVERS is an extended RCODE: an OPT is the only way to say it, so
    // one goes back even when the query's OPT was otherwise unusable.
    if let Some(e) = edns.or_else(|| {
        (code > 15).then_some(super::query::Edns {
            payload: 512,
            version: 0,
            dnssec_ok: false,
            ecs: None,
            cookie: None,
            padding: false,
        })
    }) {
        OptRr {
            payload: our_payload,
            ext_rcode: (code >> 4) as u8,
            dnssec_ok: e.dnssec_ok,
            ede: None,
            ecs: None,
            cookie,
        }
        .append(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn addr_record(owner: &str, ttl: u32, ip: &str) -> Record {
        let data = match ip.parse::<std::net::IpAddr>().unwrap() {
            std::net::IpAddr::V4(a) => hickory_proto::rr::RData::A(a.into()),
            std::net::IpAddr::V6(a) => hickory_proto::rr::RData::AAAA(a.into()),
        };
        Record::from_rdata(Name::from_ascii(owner).unwrap(), ttl, data)
    }

    #[test]
    fn simple_answers_are_written_as_hickory_writes_them() {
        let cases: Vec<(&str, RecordType, bool, Vec<Record>)> = vec![
            // Names from_ascii: from_str would lower-case them.
            (
                "h1.bench.test.",
                RecordType::A,
                true,
                vec![addr_record("h1.bench.test.", 300, "10.0.0.1")],
            ),
            (
                "Www.Example.Test.",
                RecordType::A,
                false,
                vec![
                    addr_record("Www.Example.Test.", 60, "192.0.2.1"),
                    addr_record("Www.Example.Test.", 60, "192.0.2.2"),
                ],
            ),
            (
                "v6.test.",
                RecordType::AAAA,
                true,
                vec![addr_record("v6.test.", 86400, "2001:db8::1")],
            ),
        ];
        for (qname, qtype, aa, answer) in cases {
            let qname = Name::from_ascii(qname).unwrap();
            let sections = [answer, Vec::new(), Vec::new()];
            let fast = simple_message(&qname, qtype, 0, aa, &sections).expect("a simple answer");
            let slow = WireAnswer::hickory_message(&qname, qtype, 0, aa, sections).unwrap();
            assert_eq!(fast, slow, "{qname}");
        }
    }

    #[test]
    fn other_answers_go_through_hickory() {
        let q = Name::from_ascii("www.example.test.").unwrap();
        let a = addr_record("www.example.test.", 60, "192.0.2.1");
        // Owner differing in case, another owner, another type, a
        // negative answer, an authority section, the root: not the
        // simple shape.
        let other_case = addr_record("WWW.example.test.", 60, "192.0.2.1");
        let other_owner = addr_record("web.example.test.", 60, "192.0.2.1");
        let cname = Record::from_rdata(
            q.clone(),
            60,
            hickory_proto::rr::RData::CNAME(hickory_proto::rr::rdata::CNAME(
                Name::from_ascii("web.example.test.").unwrap(),
            )),
        );
        for (rcode, sections) in [
            (0, [vec![other_case], vec![], vec![]]),
            (0, [vec![other_owner], vec![], vec![]]),
            (0, [vec![cname], vec![], vec![]]),
            (3, [vec![a.clone()], vec![], vec![]]),
            (0, [vec![a.clone()], vec![a.clone()], vec![]]),
            (0, [vec![], vec![], vec![]]),
        ] {
            let got = simple_message(&q, RecordType::A, rcode, true, &sections);
            assert!(got.is_none(), "{rcode} {:?}", sections[0]);
        }
        let root = [vec![addr_record(".", 5, "192.0.2.9")], vec![], vec![]];
        assert!(simple_message(&Name::root(), RecordType::A, 0, true, &root).is_none());
    }

    fn key(name: &[u8], qtype: u16) -> Vec<u8> {
        let mut k = name.to_vec();
        k.extend_from_slice(&qtype.to_be_bytes());
        k
    }

    #[test]
    fn key_match_folds_letters_but_not_the_type() {
        let name = Name::from_str("a.test.").unwrap();
        let a = WireAnswer::encode(&name, RecordType::from(65), Sections::default()).unwrap();
        assert!(a.answers_key(&key(b"\x01a\x04test\x00", 65)));
        assert!(a.answers_key(&key(b"\x01A\x04TEST\x00", 65)));
        // 0x41 and 0x61 differ only in the ASCII case bit.
        assert!(!a.answers_key(&key(b"\x01a\x04test\x00", 97)));
        assert!(!a.answers_key(&key(b"\x01b\x04test\x00", 65)));
        assert!(!a.answers_key(b""));
    }

    fn padded_query(padding: bool) -> Vec<u8> {
        let mut p =
            b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x01\x01a\x04test\x00\x00\x01\x00\x01"
                .to_vec();
        p.extend_from_slice(b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00");
        if padding {
            p.extend_from_slice(b"\x00\x08\x00\x0c\x00\x04\x00\x00\x00\x00");
        } else {
            p.extend_from_slice(b"\x00\x00");
        }
        p
    }

    fn ctx(pad: bool, limit: usize) -> ReplyContext {
        ReplyContext {
            limit,
            our_payload: 1232,
            stale: false,
            cookie: None,
            pad,
        }
    }

    #[test]
    fn padded_reply_is_a_multiple_of_the_block_and_still_parses() {
        let name = Name::from_str("a.test.").unwrap();
        let rec = Record::from_rdata(
            name.clone(),
            60,
            hickory_proto::rr::RData::A(hickory_proto::rr::rdata::A::new(192, 0, 2, 1)),
        );
        let a = WireAnswer::encode(
            &name,
            RecordType::A,
            Sections {
                answer: vec![rec],
                ..Sections::default()
            },
        )
        .unwrap();
        let p = padded_query(true);
        let q = Query::parse(&p).unwrap();
        let mut out = Vec::new();
        a.write_reply(&q, Instant::now(), ctx(true, 65535), &mut out);
        assert_eq!(out.len() % PAD_BLOCK, 0, "{}", out.len());
        let m = Message::from_vec(&out).unwrap();
        assert_eq!(m.answers.len(), 1);
        assert!(m.edns.is_some());
        assert_eq!(min_ttl(&out), Some(60));
    }

    #[test]
    fn padding_that_would_pass_the_limit_is_left_out() {
        let p = padded_query(true);
        let q = Query::parse(&p).unwrap();
        let mut out = Vec::new();
        WireAnswer::encode(
            &Name::from_str("a.test.").unwrap(),
            RecordType::A,
            Sections::default(),
        )
        .unwrap()
        .write_reply(&q, Instant::now(), ctx(true, 400), &mut out);
        assert!(out.len() < 400);
        assert_eq!(min_ttl(&out), None);
    }

    #[test]
    fn pad_reply_never_panics_on_garbage() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        for _ in 0..5_000 {
            let n = rng.gen_range(0..80);
            let mut p: Vec<u8> = (0..n).map(|_| rng.gen()).collect();
            let _ = pad_reply(&mut p, PAD_BLOCK, 65535);
            let _ = min_ttl(&p);
        }
    }

    #[test]
    fn bare_answer_never_matches_a_key() {
        assert!(!WireAnswer::bare(2).answers_key(&key(b"\x00", 1)));
    }
}
