//! A deliberately small RFC 1035 §5 master-file reader and the authoritative
//! lookup algorithm (RFC 1034 §4.3.2, RFC 4592 wildcards, RFC 6672 DNAME).
//!
//! Why not `hickory_proto::serialize::txt::Parser`: it sits behind the
//! `text-parsing` cargo feature, which `default-features = false` turns off,
//! and the resolver's Cargo.toml must stay as it is. So the handful of record
//! types tests need are parsed here, plus RFC 3597 `\# len hex` for any other.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{CNAME, MX, NS, NULL, PTR, SOA, SRV, TXT};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecoder, Restrict};

const DEFAULT_TTL: u32 = 3600;
/// DNAME (RFC 6672) has a type but no rdata parser in hickory-proto: its rdata stays `RData::Unknown`.
pub const DNAME: u16 = 39;
const MAX_CHAIN: usize = 8;

struct Token {
    text: String,
    quoted: bool,
}

struct Line {
    lineno: usize,
    leading_ws: bool,
    tokens: Vec<Token>,
}

/// Splits master-file text into logical lines: parentheses join physical
/// lines (SOA records are usually written that way) and `;` starts a comment.
fn lex(text: &str) -> Result<Vec<Line>, String> {
    let mut lines = Vec::new();
    let mut cur = Line {
        lineno: 1,
        leading_ws: false,
        tokens: Vec::new(),
    };
    let mut at_line_start = true;
    let mut depth = 0usize;
    let mut lineno = 1;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\n' => {
                lineno += 1;
                if depth == 0 {
                    let done = std::mem::replace(
                        &mut cur,
                        Line {
                            lineno,
                            leading_ws: false,
                            tokens: Vec::new(),
                        },
                    );
                    if !done.tokens.is_empty() {
                        lines.push(done);
                    }
                    at_line_start = true;
                }
            }
            ' ' | '\t' | '\r' => {
                if at_line_start && depth == 0 && cur.tokens.is_empty() {
                    cur.leading_ws = true;
                }
            }
            ';' => {
                while let Some(&n) = chars.peek() {
                    if n == '\n' {
                        break;
                    }
                    chars.next();
                }
            }
            '(' => depth += 1,
            ')' => {
                depth = depth
                    .checked_sub(1)
                    .ok_or(format!("line {lineno}: unbalanced ')'"))?
            }
            '"' => {
                let mut s = String::new();
                loop {
                    match chars.next() {
                        None => return Err(format!("line {lineno}: unterminated quote")),
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(d) if d.is_ascii_digit() => {
                                let mut v = d.to_digit(10).unwrap_or(0);
                                for _ in 0..2 {
                                    if let Some(d2) = chars.next_if(|c| c.is_ascii_digit()) {
                                        v = v * 10 + d2.to_digit(10).unwrap_or(0);
                                    }
                                }
                                s.push(char::from_u32(v).unwrap_or('?'));
                            }
                            Some(e) => s.push(e),
                            None => return Err(format!("line {lineno}: dangling escape")),
                        },
                        Some('\n') => {
                            lineno += 1;
                            s.push('\n');
                        }
                        Some(o) => s.push(o),
                    }
                }
                cur.tokens.push(Token {
                    text: s,
                    quoted: true,
                });
                at_line_start = false;
            }
            _ => {
                let mut s = String::from(c);
                let mut escaped = c == '\\';
                while let Some(&n) = chars.peek() {
                    if !escaped && (n.is_whitespace() || "();\"".contains(n)) {
                        break;
                    }
                    escaped = !escaped && n == '\\';
                    s.push(n);
                    chars.next();
                }
                cur.tokens.push(Token {
                    text: s,
                    quoted: false,
                });
                at_line_start = false;
            }
        }
    }
    if depth != 0 {
        return Err("unbalanced '(' at end of input".into());
    }
    if !cur.tokens.is_empty() {
        lines.push(cur);
    }
    Ok(lines)
}

fn parse_name(tok: &str, origin: Option<&Name>) -> Result<Name, String> {
    if tok == "@" {
        return origin
            .cloned()
            .ok_or_else(|| "'@' used before $ORIGIN is known".to_string());
    }
    let n = Name::from_ascii(tok).map_err(|e| format!("bad name {tok:?}: {e}"))?;
    if tok.ends_with('.') {
        return Ok(n);
    }
    let origin = origin.ok_or_else(|| {
        format!("relative name {tok:?} before $ORIGIN (add an $ORIGIN line or make it absolute)")
    })?;
    n.append_domain(origin)
        .map_err(|e| format!("bad name {tok:?}: {e}"))
}

/// Accepts plain seconds and BIND-style unit suffixes (`1h30m`, `2d`).
fn parse_ttl(tok: &str) -> Result<u32, String> {
    let mut total: u64 = 0;
    let mut num: Option<u64> = None;
    for c in tok.chars() {
        if let Some(d) = c.to_digit(10) {
            num = Some(num.unwrap_or(0) * 10 + u64::from(d));
            continue;
        }
        let mult = match c.to_ascii_lowercase() {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            'w' => 604800,
            _ => return Err(format!("bad time value {tok:?}")),
        };
        total += num.take().ok_or(format!("bad time value {tok:?}"))? * mult;
    }
    total += num.unwrap_or(0);
    u32::try_from(total).map_err(|_| format!("time value {tok:?} too large"))
}

fn is_ttl(tok: &str) -> bool {
    tok.starts_with(|c: char| c.is_ascii_digit()) && parse_ttl(tok).is_ok()
}

fn parse_type(tok: &str) -> Result<RecordType, String> {
    let up = tok.to_ascii_uppercase();
    if up == "DNAME" {
        return Ok(RecordType::Unknown(DNAME));
    }
    if let Some(n) = up.strip_prefix("TYPE") {
        if let Ok(code) = n.parse::<u16>() {
            return Ok(RecordType::from(code));
        }
    }
    RecordType::from_str(&up).map_err(|_| format!("unknown record type {tok:?}"))
}

fn hex_decode(s: &str) -> Result<Vec<u8>, String> {
    if !s.is_ascii() || !s.len().is_multiple_of(2) {
        return Err(format!("odd-length hex {s:?}"));
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).map_err(|_| format!("bad hex {s:?}")))
        .collect()
}

pub fn name_to_wire(name: &Name) -> Vec<u8> {
    let mut out = Vec::new();
    for label in name.iter() {
        out.push(label.len() as u8);
        out.extend_from_slice(label);
    }
    out.push(0);
    out
}

fn num<T: FromStr>(tok: Option<&Token>, what: &str) -> Result<T, String> {
    let t = tok.ok_or(format!("missing {what}"))?;
    t.text
        .parse()
        .map_err(|_| format!("bad {what} {:?}", t.text))
}

fn name_arg(tok: Option<&Token>, origin: Option<&Name>, what: &str) -> Result<Name, String> {
    parse_name(&tok.ok_or(format!("missing {what}"))?.text, origin)
}

fn parse_rdata(rtype: RecordType, args: &[Token], origin: Option<&Name>) -> Result<RData, String> {
    let mut it = args.iter();
    if args.first().is_some_and(|t| !t.quoted && t.text == "\\#") {
        it.next();
        let len: u16 = num(it.next(), "RFC 3597 length")?;
        let hex: String = it.map(|t| t.text.as_str()).collect();
        let bytes = hex_decode(&hex)?;
        if bytes.len() != usize::from(len) {
            return Err(format!("RFC 3597 length {len} != {} bytes", bytes.len()));
        }
        let mut dec = BinDecoder::new(&bytes);
        return match RData::read(&mut dec, rtype, Restrict::new(len)) {
            Ok(r) => Ok(r),
            Err(_) if !bytes.is_empty() => Ok(RData::Unknown {
                code: rtype,
                rdata: NULL::with(bytes),
            }),
            Err(e) => Err(format!("cannot decode empty rdata for {rtype}: {e}")),
        };
    }
    let rd = match rtype {
        RecordType::A => {
            let t = it.next().ok_or("missing address")?;
            let ip: Ipv4Addr = t
                .text
                .parse()
                .map_err(|_| format!("bad IPv4 {:?}", t.text))?;
            RData::A(ip.into())
        }
        RecordType::AAAA => {
            let t = it.next().ok_or("missing address")?;
            let ip: Ipv6Addr = t
                .text
                .parse()
                .map_err(|_| format!("bad IPv6 {:?}", t.text))?;
            RData::AAAA(ip.into())
        }
        RecordType::NS => RData::NS(NS(name_arg(it.next(), origin, "NS target")?)),
        RecordType::CNAME => RData::CNAME(CNAME(name_arg(it.next(), origin, "CNAME target")?)),
        RecordType::PTR => RData::PTR(PTR(name_arg(it.next(), origin, "PTR target")?)),
        RecordType::MX => {
            let pref = num(it.next(), "MX preference")?;
            RData::MX(MX::new(pref, name_arg(it.next(), origin, "MX exchange")?))
        }
        RecordType::SRV => {
            let p = num(it.next(), "SRV priority")?;
            let w = num(it.next(), "SRV weight")?;
            let port = num(it.next(), "SRV port")?;
            RData::SRV(SRV::new(
                p,
                w,
                port,
                name_arg(it.next(), origin, "SRV target")?,
            ))
        }
        RecordType::TXT => {
            let strings: Vec<String> = it.by_ref().map(|t| t.text.clone()).collect();
            if strings.is_empty() {
                return Err("TXT needs at least one string".into());
            }
            RData::TXT(TXT::new(strings))
        }
        RecordType::SOA => {
            let mname = name_arg(it.next(), origin, "SOA mname")?;
            let rname = name_arg(it.next(), origin, "SOA rname")?;
            let serial = num(it.next(), "SOA serial")?;
            let mut times = [0u32; 4];
            for (i, what) in ["refresh", "retry", "expire", "minimum"].iter().enumerate() {
                times[i] = parse_ttl(&it.next().ok_or(format!("missing SOA {what}"))?.text)?;
            }
            RData::SOA(SOA::new(
                mname,
                rname,
                serial,
                times[0] as i32,
                times[1] as i32,
                times[2] as i32,
                times[3],
            ))
        }
        RecordType::DS => {
            // Kept opaque: hickory-proto only types DS with its `dnssec` feature.
            let tag: u16 = num(it.next(), "DS key tag")?;
            let alg: u8 = num(it.next(), "DS algorithm")?;
            let dt: u8 = num(it.next(), "DS digest type")?;
            let hex: String = it.by_ref().map(|t| t.text.as_str()).collect();
            let mut bytes = tag.to_be_bytes().to_vec();
            bytes.extend([alg, dt]);
            bytes.extend(hex_decode(&hex)?);
            RData::Unknown {
                code: RecordType::DS,
                rdata: NULL::with(bytes),
            }
        }
        RecordType::Unknown(DNAME) => RData::Unknown {
            code: rtype,
            rdata: NULL::with(name_to_wire(&name_arg(it.next(), origin, "DNAME target")?)),
        },
        other => {
            return Err(format!(
            "record type {other} is not supported by the sim's parser; use RFC 3597 `\\# len hex`"
        ))
        }
    };
    if let Some(extra) = it.next() {
        return Err(format!("unexpected trailing token {:?}", extra.text));
    }
    Ok(rd)
}

/// Parses zone-file text into records, plus the origin: the SOA owner if
/// there is one, else the first `$ORIGIN`.
pub fn parse_records(text: &str) -> Result<(Option<Name>, Vec<Record>), String> {
    let mut origin: Option<Name> = None;
    let mut first_origin: Option<Name> = None;
    let mut soa_owner: Option<Name> = None;
    let mut default_ttl: Option<u32> = None;
    let mut last_owner: Option<Name> = None;
    let mut records = Vec::new();
    for line in lex(text)? {
        let ctx = |e: String| format!("zone line {}: {e}", line.lineno);
        let toks = &line.tokens;
        let first = toks[0].text.as_str();
        if first.eq_ignore_ascii_case("$ORIGIN") {
            let arg = toks
                .get(1)
                .ok_or_else(|| ctx("$ORIGIN needs a name".into()))?;
            let o = parse_name(&arg.text, origin.as_ref()).map_err(ctx)?;
            first_origin.get_or_insert_with(|| o.clone());
            origin = Some(o);
            continue;
        }
        if first.eq_ignore_ascii_case("$TTL") {
            let arg = toks
                .get(1)
                .ok_or_else(|| ctx("$TTL needs a value".into()))?;
            default_ttl = Some(parse_ttl(&arg.text).map_err(ctx)?);
            continue;
        }
        if first.starts_with('$') {
            return Err(ctx(format!("unsupported directive {first}")));
        }
        let mut i = 0;
        let owner = if line.leading_ws {
            last_owner
                .clone()
                .ok_or_else(|| ctx("continuation line without a previous owner".into()))?
        } else {
            i = 1;
            parse_name(first, origin.as_ref()).map_err(ctx)?
        };
        let mut ttl = None;
        let mut class = DNSClass::IN;
        while let Some(t) = toks.get(i) {
            if is_ttl(&t.text) {
                ttl = Some(parse_ttl(&t.text).map_err(ctx)?);
            } else if ["IN", "CH", "HS", "CS"].contains(&t.text.to_ascii_uppercase().as_str()) {
                class = DNSClass::from_str(&t.text.to_ascii_uppercase()).unwrap_or(DNSClass::IN);
            } else {
                break;
            }
            i += 1;
        }
        let rtype = parse_type(&toks.get(i).ok_or_else(|| ctx("missing type".into()))?.text)
            .map_err(ctx)?;
        // Set before parsing rdata so `SOA ns1 hostmaster ...` may be relative.
        if rtype == RecordType::SOA && soa_owner.is_none() {
            soa_owner = Some(owner.clone());
            if origin.is_none() {
                origin = Some(owner.clone());
            }
        }
        let rdata = parse_rdata(rtype, &toks[i + 1..], origin.as_ref()).map_err(ctx)?;
        let ttl = ttl.or(default_ttl).unwrap_or(DEFAULT_TTL);
        let mut rec = Record::from_rdata(owner.clone(), ttl, rdata);
        rec.dns_class = class;
        records.push(rec);
        last_owner = Some(owner);
    }
    Ok((soa_owner.or(first_origin), records))
}

/// One authoritative zone: owner name (case-insensitive key) → records in file order.
#[derive(Debug)]
pub struct Zone {
    pub origin: Name,
    nodes: BTreeMap<Name, Vec<Record>>,
}

#[derive(Debug, Default)]
pub struct Reply {
    pub rcode: ResponseCode,
    pub aa: bool,
    pub answer: Vec<Record>,
    pub authority: Vec<Record>,
    pub additional: Vec<Record>,
}

enum Step {
    Records(Vec<Record>),
    /// Records to add to the answer, then continue at the target.
    Alias(Vec<Record>, Name),
    NoData,
    NxDomain,
    Referral(Name),
    /// RFC 6672 §2.2: the synthesized name would exceed 255 octets.
    YxDomain(Record),
}

fn labels(n: &Name) -> usize {
    n.iter().count()
}

fn rdata_name(r: &Record) -> Option<Name> {
    match &r.data {
        RData::CNAME(c) => Some(c.0.clone()),
        RData::NS(n) => Some(n.0.clone()),
        RData::Unknown { code, rdata } if *code == RecordType::Unknown(DNAME) => {
            wire_to_name(&rdata.anything)
        }
        _ => None,
    }
}

fn wire_to_name(bytes: &[u8]) -> Option<Name> {
    let mut labels: Vec<&[u8]> = Vec::new();
    let mut i = 0;
    loop {
        let len = usize::from(*bytes.get(i)?);
        if len == 0 {
            break;
        }
        labels.push(bytes.get(i + 1..i + 1 + len)?);
        i += 1 + len;
    }
    let mut n = Name::from_labels(labels).ok()?;
    n.set_fqdn(true);
    Some(n)
}

impl Zone {
    pub fn parse(text: &str) -> Result<Zone, String> {
        let (origin, records) = parse_records(text)?;
        let origin = origin.ok_or("zone has neither $ORIGIN nor SOA")?;
        let mut nodes: BTreeMap<Name, Vec<Record>> = BTreeMap::new();
        for r in records {
            if !origin.zone_of(&r.name) {
                return Err(format!("record {r} is outside the zone {origin}"));
            }
            nodes.entry(r.name.clone()).or_default().push(r);
        }
        let zone = Zone { origin, nodes };
        if zone.soa().is_none() {
            return Err(format!("zone {} has no SOA at its apex", zone.origin));
        }
        Ok(zone)
    }

    fn soa(&self) -> Option<&Record> {
        self.rrset(&self.origin, RecordType::SOA).into_iter().next()
    }

    /// RFC 2308 §3: negative answers carry the SOA with TTL = min(TTL, MINIMUM).
    fn negative_soa(&self) -> Vec<Record> {
        self.soa()
            .map(|s| {
                let mut s = s.clone();
                if let RData::SOA(d) = &s.data {
                    let ttl = s.ttl.min(d.minimum);
                    s.ttl = ttl;
                }
                vec![s]
            })
            .unwrap_or_default()
    }

    fn rrset(&self, name: &Name, t: RecordType) -> Vec<&Record> {
        self.nodes
            .get(name)
            .map(|rs| rs.iter().filter(|r| r.record_type() == t).collect())
            .unwrap_or_default()
    }

    /// True for names with records and for empty non-terminals (RFC 8020 §2).
    fn exists(&self, name: &Name) -> bool {
        self.nodes.contains_key(name) || self.nodes.keys().any(|k| name.zone_of(k))
    }

    fn step(&self, qname: &Name, qtype: RecordType) -> Step {
        let ol = labels(&self.origin);
        let ql = labels(qname);
        for k in ol..=ql {
            let anc = qname.trim_to(k);
            // RFC 4035 §3.1.4.1 style: DS belongs to the parent side of a cut.
            let ds_at_cut = k == ql && qtype == RecordType::DS;
            if k > ol && !ds_at_cut && !self.rrset(&anc, RecordType::NS).is_empty() {
                return Step::Referral(anc);
            }
            if k < ql {
                if let Some(d) = self.rrset(&anc, RecordType::Unknown(DNAME)).first() {
                    let d = (*d).clone();
                    let Some(target) = rdata_name(&d) else {
                        return Step::NoData;
                    };
                    let prefix = qname.iter().take(ql - k);
                    let new = Name::from_labels(prefix).and_then(|p| p.append_domain(&target));
                    return match new {
                        Ok(new) => {
                            let cname = Record::from_rdata(
                                qname.clone(),
                                d.ttl,
                                RData::CNAME(CNAME(new.clone())),
                            );
                            Step::Alias(vec![d, cname], new)
                        }
                        Err(_) => Step::YxDomain(d),
                    };
                }
            }
        }
        if let Some(rs) = self.nodes.get(qname) {
            return Self::match_node(rs, qname, qtype);
        }
        if self.exists(qname) {
            return Step::NoData;
        }
        if ql <= ol {
            return Step::NxDomain;
        }
        // RFC 4592 §3.3.1: the source of synthesis hangs off the closest encloser.
        let mut k = ql;
        let encloser = loop {
            k -= 1;
            let anc = qname.trim_to(k);
            if k <= ol || self.exists(&anc) {
                break anc;
            }
        };
        let wild = Name::from_ascii("*")
            .and_then(|w| w.append_domain(&encloser))
            .ok();
        match wild.and_then(|w| self.nodes.get(&w)) {
            Some(rs) => Self::match_node(rs, qname, qtype),
            None => Step::NxDomain,
        }
    }

    /// Owner names are rewritten to `qname`, which only matters for wildcards.
    fn match_node(rs: &[Record], qname: &Name, qtype: RecordType) -> Step {
        let rename = |r: &Record| {
            let mut r = r.clone();
            r.name = qname.clone();
            r
        };
        let hits: Vec<Record> = rs
            .iter()
            .filter(|r| qtype == RecordType::ANY || r.record_type() == qtype)
            .map(rename)
            .collect();
        if !hits.is_empty() {
            return Step::Records(hits);
        }
        if qtype != RecordType::CNAME {
            if let Some(c) = rs.iter().find(|r| r.record_type() == RecordType::CNAME) {
                if let Some(t) = rdata_name(c) {
                    return Step::Alias(vec![rename(c)], t);
                }
            }
        }
        Step::NoData
    }

    fn glue(&self, ns: &[&Record]) -> Vec<Record> {
        let mut out = Vec::new();
        for t in ns.iter().filter_map(|r| rdata_name(r)) {
            if self.origin.zone_of(&t) {
                for ty in [RecordType::A, RecordType::AAAA] {
                    out.extend(self.rrset(&t, ty).into_iter().cloned());
                }
            }
        }
        out
    }

    pub fn answer(&self, qname: &Name, qtype: RecordType) -> Reply {
        let mut reply = Reply {
            aa: true,
            ..Reply::default()
        };
        let mut name = qname.clone();
        for link in 0..=MAX_CHAIN {
            match self.step(&name, qtype) {
                Step::Records(rs) => {
                    reply.answer.extend(rs);
                    return reply;
                }
                Step::Alias(rs, target) => {
                    reply.answer.extend(rs);
                    // Out-of-zone targets are left to the resolver to chase.
                    if !self.origin.zone_of(&target) || link == MAX_CHAIN {
                        return reply;
                    }
                    name = target;
                }
                Step::NoData => {
                    reply.authority = self.negative_soa();
                    return reply;
                }
                Step::NxDomain => {
                    reply.rcode = ResponseCode::NXDomain;
                    reply.authority = self.negative_soa();
                    return reply;
                }
                Step::YxDomain(d) => {
                    reply.rcode = ResponseCode::YXDomain;
                    reply.answer.push(d);
                    return reply;
                }
                Step::Referral(cut) => {
                    // A chain that leads below a cut stops here; the resolver
                    // restarts at the last target.
                    if !reply.answer.is_empty() {
                        return reply;
                    }
                    let ns = self.rrset(&cut, RecordType::NS);
                    reply.aa = false;
                    reply.additional = self.glue(&ns);
                    reply.authority = ns.into_iter().cloned().collect();
                    return reply;
                }
            }
        }
        reply
    }
}
