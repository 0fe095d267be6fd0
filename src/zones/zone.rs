//! One local zone: its names, static RRsets and pools, and the lookup
//! algorithm of RFC 1034 §4.3.2 (without delegations) with wildcards per
//! RFC 4592 and in-zone CNAME chasing.
//!
//! A name "exists" when it owns static records or a pool, or when it is an
//! empty non-terminal (an ancestor, below the apex, of a name that exists):
//! such names answer NODATA and block wildcard synthesis (RFC 4592 §2.2.2).
//! NS records below the apex are served as ordinary data: local zones do not
//! delegate.

use std::collections::HashMap;
use std::path::Path;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{NS, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_proto::serialize::txt::Parser;

use super::pool::Pool;
use super::{ZoneAnswer, ZonesError};

/// Bound on in-zone CNAME chains, so a loop in the data cannot spin.
const MAX_CNAME_CHAIN: usize = 8;

/// Everything at one owner name.
#[derive(Debug, Default)]
struct Node {
    /// Static RRsets from the zone file (plus the synthesised apex SOA/NS).
    rrsets: Vec<(RecordType, Vec<Record>)>,
    /// Indices into `Zone::pools` (at most one per type; a CNAME pool alone).
    pools: Vec<usize>,
}

impl Node {
    fn rrset(&self, rtype: RecordType) -> Option<&[Record]> {
        self.rrsets
            .iter()
            .find(|(t, _)| *t == rtype)
            .map(|(_, r)| r.as_slice())
    }
}

/// A locally authoritative zone.
#[derive(Debug)]
pub(crate) struct Zone {
    /// Apex, lower-cased and fully qualified.
    pub(crate) origin: Name,
    /// TTL of pool answers.
    pub(crate) ttl: u32,
    /// Keyed by fully-qualified name; `Name`'s `Eq`/`Hash` ignore ASCII case.
    nodes: HashMap<Name, Node>,
    /// SOA for the authority section of negative answers, TTL already
    /// min(SOA TTL, MINIMUM) as RFC 2308 §3 asks.
    negative_soa: Option<Record>,
    pub(crate) pools: Vec<Pool>,
}

/// Why a pool could not be placed; the caller adds zone/pool context.
#[derive(Debug)]
pub(crate) enum PlaceError {
    Outside,
    Duplicate,
    Conflict(String),
}

impl Zone {
    pub(crate) fn new(origin: Name, ttl: u32) -> Self {
        let mut nodes = HashMap::new();
        nodes.insert(origin.clone(), Node::default());
        Zone {
            origin,
            ttl,
            nodes,
            negative_soa: None,
            pools: Vec::new(),
        }
    }

    /// True if `name` is at or below the apex. Allocation-free (label by
    /// label, ASCII case-insensitive) because it runs for every query.
    pub(crate) fn contains(&self, name: &Name) -> bool {
        is_at_or_under(name, &self.origin)
    }

    /// Adds zone-file records (already checked to be inside the zone).
    pub(crate) fn add_static(&mut self, records: Vec<Record>) {
        for record in records {
            let node = self.nodes.entry(fqdn(&record.name)).or_default();
            let rtype = record.record_type();
            match node.rrsets.iter_mut().find(|(t, _)| *t == rtype) {
                Some((_, set)) => set.push(record),
                None => node.rrsets.push((rtype, vec![record])),
            }
        }
    }

    /// Synthesises the apex SOA and NS when the zone file had none, and
    /// prepares the negative-answer SOA.
    pub(crate) fn finish_apex(&mut self) {
        let origin = self.origin.clone();
        let ttl = self.ttl;
        let host = |label: &str| Name::from_ascii(label).and_then(|l| l.append_domain(&origin));
        let apex = self.nodes.entry(origin.clone()).or_default();
        if apex.rrset(RecordType::SOA).is_none() {
            if let (Ok(mname), Ok(rname)) = (host("ns"), host("hostmaster")) {
                let soa = SOA::new(mname, rname, 1, 3600, 600, 86400, ttl);
                let rec = Record::from_rdata(origin.clone(), ttl, RData::SOA(soa));
                apex.rrsets.push((RecordType::SOA, vec![rec]));
            }
        }
        if apex.rrset(RecordType::NS).is_none() {
            if let Ok(ns) = host("ns") {
                let rec = Record::from_rdata(origin.clone(), ttl, RData::NS(NS(ns)));
                apex.rrsets.push((RecordType::NS, vec![rec]));
            }
        }
        self.negative_soa = apex
            .rrset(RecordType::SOA)
            .and_then(|s| s.first())
            .map(|soa| {
                let mut rec = soa.clone();
                if let RData::SOA(data) = &soa.data {
                    rec.ttl = soa.ttl.min(data.minimum);
                }
                rec
            });
    }

    /// Places a pool at its owner name. One pool per (name, type); a CNAME
    /// pool must be alone at its name (RFC 1034 §3.6.2: CNAME and other data).
    pub(crate) fn add_pool(&mut self, pool: Pool) -> Result<(), PlaceError> {
        if !self.contains(&pool.name) {
            return Err(PlaceError::Outside);
        }
        let index = self.pools.len();
        let node = self.nodes.entry(fqdn(&pool.name)).or_default();
        for &other in &node.pools {
            let other_type = self.pools.get(other).map(|p| p.rtype);
            if other_type == Some(pool.rtype) {
                return Err(PlaceError::Duplicate);
            }
            if other_type == Some(RecordType::CNAME) || pool.rtype == RecordType::CNAME {
                return Err(PlaceError::Conflict(
                    "a CNAME pool cannot share its name with another pool".into(),
                ));
            }
        }
        if pool.rtype == RecordType::CNAME {
            if let Some((t, _)) = node.rrsets.first() {
                return Err(PlaceError::Conflict(format!(
                    "a CNAME pool cannot share its name with static {t} records"
                )));
            }
        } else if node.rrset(pool.rtype).is_some() || node.rrset(RecordType::CNAME).is_some() {
            let t = if node.rrset(pool.rtype).is_some() {
                pool.rtype
            } else {
                RecordType::CNAME
            };
            return Err(PlaceError::Conflict(format!(
                "the zone file already has {t} records at this name"
            )));
        }
        node.pools.push(index);
        self.pools.push(pool);
        Ok(())
    }

    /// Inserts the empty non-terminals: every ancestor of an existing name,
    /// down to the apex, exists.
    pub(crate) fn finish_tree(&mut self) {
        let apex_labels = self.origin.iter().count();
        let mut missing = Vec::new();
        for name in self.nodes.keys() {
            let labels = name.iter().count();
            for keep in (apex_labels + 1)..labels {
                let ancestor = name.trim_to(keep);
                if !self.nodes.contains_key(&ancestor) {
                    missing.push(ancestor);
                }
            }
        }
        for name in missing {
            self.nodes.entry(name).or_default();
        }
    }

    /// Answers `qname`/`qtype` (the caller checked `contains`). `pools`
    /// builds the records of a pool for an owner name (it knows the client).
    pub(crate) fn answer(
        &self,
        qname: &Name,
        qtype: RecordType,
        pools: &mut dyn FnMut(&Pool, &Name) -> Vec<Record>,
    ) -> ZoneAnswer {
        let mut out = ZoneAnswer {
            rcode: ResponseCode::NoError,
            answer: Vec::new(),
            authority: Vec::new(),
            additional: Vec::new(),
            ecs_scope: None,
        };
        let mut name = fqdn(qname);
        for _ in 0..MAX_CNAME_CHAIN {
            let Some(node) = self.find(&name) else {
                out.rcode = ResponseCode::NXDomain;
                out.authority.extend(self.negative_soa.iter().cloned());
                return out;
            };
            let (records, cname_target) = self.node_answer(node, &name, qtype, pools);
            if records.is_empty() {
                // NODATA; after a CNAME the answer keeps the chain (RFC 2308 §2.2).
                out.authority.extend(self.negative_soa.iter().cloned());
                return out;
            }
            out.answer.extend(records);
            match cname_target {
                Some(target)
                    if self.contains(&target) && !out.answer.iter().any(|r| r.name == target) =>
                {
                    name = fqdn(&target);
                }
                // Out of zone: the caller's resolver chases it.
                _ => return out,
            }
        }
        out
    }

    /// The node for `name`: exact match, else the wildcard at the closest
    /// encloser (RFC 4592 §3.3.1), else `None` (NXDOMAIN).
    fn find(&self, name: &Name) -> Option<&Node> {
        if let Some(node) = self.nodes.get(name) {
            return Some(node);
        }
        let apex_labels = self.origin.iter().count();
        let labels = name.iter().count();
        // From the parent of `name` up to the apex: the first name that
        // exists is the closest encloser; only `*.<encloser>` may synthesise.
        for keep in (apex_labels..labels).rev() {
            if self.nodes.contains_key(&name.trim_to(keep)) {
                let source = name.trim_to(keep + 1).into_wildcard();
                return self.nodes.get(&source);
            }
        }
        None
    }

    /// Records at `node` for `qtype`, owned by `owner` (the query name, so
    /// wildcard answers carry it), and a CNAME target to follow, if any.
    fn node_answer(
        &self,
        node: &Node,
        owner: &Name,
        qtype: RecordType,
        pools: &mut dyn FnMut(&Pool, &Name) -> Vec<Record>,
    ) -> (Vec<Record>, Option<Name>) {
        let own = |records: &[Record]| -> Vec<Record> {
            records
                .iter()
                .map(|r| {
                    let mut r = r.clone();
                    r.name = owner.clone();
                    r
                })
                .collect()
        };
        let node_pools = node.pools.iter().filter_map(|&i| self.pools.get(i));
        if qtype == RecordType::ANY {
            let mut all: Vec<Record> = node.rrsets.iter().flat_map(|(_, set)| own(set)).collect();
            for pool in node_pools {
                all.extend(pools(pool, owner));
            }
            return (all, None);
        }
        for pool in node_pools {
            if pool.rtype == qtype || pool.rtype == RecordType::CNAME {
                let records = pools(pool, owner);
                let target = if qtype == RecordType::CNAME {
                    None
                } else {
                    cname_target(&records)
                };
                return (records, target);
            }
        }
        if let Some(set) = node.rrset(qtype) {
            return (own(set), None);
        }
        if let Some(set) = node.rrset(RecordType::CNAME) {
            let records = own(set);
            let target = cname_target(&records);
            return (records, target);
        }
        (Vec::new(), None)
    }
}

/// True if `name` is `origin` or below it. Allocation-free (label by label,
/// ASCII case-insensitive) because it runs for every query.
pub(crate) fn is_at_or_under(name: &Name, origin: &Name) -> bool {
    let mut zone_labels = origin.iter().rev();
    let mut name_labels = name.iter().rev();
    loop {
        match (zone_labels.next(), name_labels.next()) {
            (None, _) => return true,
            (Some(_), None) => return false,
            (Some(z), Some(n)) if z.eq_ignore_ascii_case(n) => {}
            _ => return false,
        }
    }
}

fn cname_target(records: &[Record]) -> Option<Name> {
    records.iter().find_map(|r| match &r.data {
        RData::CNAME(c) => Some(c.0.clone()),
        _ => None,
    })
}

/// `Name`'s `Hash` includes the FQDN flag; keys are always fully qualified.
fn fqdn(name: &Name) -> Name {
    let mut n = name.clone();
    n.set_fqdn(true);
    n
}

/// Reads and parses a zone file. Records without a TTL get the zone's `ttl`
/// (`$TTL` in the file overrides it). Every record must be inside the zone.
pub(crate) fn load_zone_file(
    zone_label: &str,
    origin: &Name,
    ttl: u32,
    path: &Path,
) -> Result<Vec<Record>, ZonesError> {
    let text = std::fs::read_to_string(path).map_err(|e| ZonesError::ZoneFile {
        zone: zone_label.to_string(),
        path: path.to_path_buf(),
        line: None,
        message: format!("cannot read: {e}"),
    })?;
    parse_zone_text(zone_label, origin, ttl, path, &text)
}

/// Parses zone-file text (`path` only names it in errors): the part of
/// [`load_zone_file`] that sees the file's bytes, and what `fuzz` drives.
pub(crate) fn parse_zone_text(
    zone_label: &str,
    origin: &Name,
    ttl: u32,
    path: &Path,
    text: &str,
) -> Result<Vec<Record>, ZonesError> {
    let file_error = |line: Option<usize>, message: String| ZonesError::ZoneFile {
        zone: zone_label.to_string(),
        path: path.to_path_buf(),
        line,
        message,
    };
    let parse = |body: &str| {
        // The `$TTL` line is ours; line numbers reported to the user skip it.
        let input = format!("$TTL {ttl}\n{body}\n");
        Parser::new(input, Some(path.to_path_buf()), Some(origin.clone())).parse()
    };
    let (_, sets) = match parse(text) {
        Ok(parsed) => parsed,
        Err(e) => return Err(file_error(error_line(text, &parse), e.to_string())),
    };
    let mut records = Vec::new();
    for set in sets.into_values() {
        for record in set.records_without_rrsigs() {
            let owner = &record.name;
            if !origin.zone_of(owner) {
                return Err(file_error(
                    line_of_owner(text, owner, origin),
                    format!(
                        "record {owner} {} is outside the zone",
                        record.record_type()
                    ),
                ));
            }
            if record.record_type() == RecordType::SOA && !origin.eq(owner) {
                return Err(file_error(
                    line_of_owner(text, owner, origin),
                    format!("SOA at {owner} is not at the zone apex"),
                ));
            }
            let mut record = record.clone();
            if let RData::SOA(soa) = &record.data {
                // hickory's parser stores the SOA's EXPIRE as its TTL (a known
                // quirk); the written TTL is lost, so use MINIMUM, the
                // negative-caching TTL, which is what the SOA is served for.
                let minimum = soa.minimum;
                record.ttl = minimum;
            }
            records.push(record);
        }
    }
    Ok(records)
}

/// The parser's errors carry no position, so find the first record whose
/// inclusion makes the file fail, by binary search over prefixes that end
/// between records (parse failure is monotonic over such prefixes). Only
/// runs on the error path. Returns a 1-based line number in the user's file.
fn error_line<T, E>(text: &str, parse: &dyn Fn(&str) -> Result<T, E>) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let (records, unfinished) = record_spans(&lines);
    let fails = |end: usize| parse(&lines.get(..end).unwrap_or(&[]).join("\n")).is_err();
    let (mut lo, mut hi) = (0usize, records.len());
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let end = records.get(mid).map_or(0, |r| r.1);
        if fails(end) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    records
        .get(lo)
        .map(|r| r.0 + 1)
        .or(unfinished.map(|l| l + 1))
}

/// Splits zone-file lines into logical records (parentheses continue a
/// record, `;` starts a comment, quotes and `\` escapes protect both).
/// Returns (first line index, end line index exclusive) per record, and the
/// first line of a record still open at end of file.
fn record_spans(lines: &[&str]) -> (Vec<(usize, usize)>, Option<usize>) {
    let mut spans = Vec::new();
    let mut depth = 0u32;
    let mut start: Option<usize> = None;
    for (i, line) in lines.iter().enumerate() {
        let mut quoted = false;
        let mut escaped = false;
        let mut content = false;
        for c in line.chars() {
            if escaped {
                escaped = false;
                continue;
            }
            match c {
                '\\' => escaped = true,
                '"' => quoted = !quoted,
                ';' if !quoted => break,
                '(' if !quoted => depth += 1,
                ')' if !quoted => depth = depth.saturating_sub(1),
                _ => {}
            }
            content |= !c.is_whitespace();
        }
        if content && start.is_none() {
            start = Some(i);
        }
        if depth == 0 {
            if let Some(s) = start.take() {
                spans.push((s, i + 1));
            }
        }
    }
    (spans, start)
}

/// Best-effort line of the first record owned by `owner` (for errors found
/// after parsing, e.g. out-of-zone data).
fn line_of_owner(text: &str, owner: &Name, origin: &Name) -> Option<usize> {
    text.lines()
        .position(|line| {
            let first = line.split_whitespace().next().unwrap_or("");
            !line.starts_with(char::is_whitespace)
                && Name::parse(first, Some(origin)).is_ok_and(|n| n.eq(owner))
        })
        .map(|i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_spans_follow_parentheses_comments_and_quotes() {
        let lines = [
            "; header",
            "@ SOA ns hm ( 1 ; serial (",
            "  2 3 4 5 )",
            "",
            "txt TXT \"a ( b\"",
            "x A 192.0.2.1 ; ) comment",
            "y SOA ( open",
        ];
        let (spans, open) = record_spans(&lines);
        assert_eq!(spans, vec![(1, 3), (4, 5), (5, 6)]);
        assert_eq!(open, Some(6));
    }
}
