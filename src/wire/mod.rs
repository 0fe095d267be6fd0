//! The DNS wire format as the hot path needs it: a bounds-checked reader,
//! the fast query parser and the reply builder (RFC 1035 §4, RFC 6891).
//!
//! This module knows nothing of caching or iteration; full message parsing
//! for the iterator is left to hickory-proto.

pub mod answer;
pub mod query;

/// RR type of the EDNS OPT pseudo-record.
pub const OPT: u16 = 41;

/// A bounds-checked reader over a packet: every accessor returns `None`
/// past the end instead of panicking.
pub struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    /// Starts at offset 0.
    pub fn new(buf: &'a [u8]) -> Self {
        Cursor { buf, pos: 0 }
    }
    /// Starts at `pos`.
    pub fn at(buf: &'a [u8], pos: usize) -> Self {
        Cursor { buf, pos }
    }
    /// Current offset.
    pub fn pos(&self) -> usize {
        self.pos
    }
    /// Reads one byte.
    pub fn u8(&mut self) -> Option<u8> {
        let b = *self.buf.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }
    /// Reads a big-endian u16.
    pub fn u16(&mut self) -> Option<u16> {
        let b = self.bytes(2)?;
        Some(u16::from_be_bytes([b[0], b[1]]))
    }
    /// Reads a big-endian u32.
    pub fn u32(&mut self) -> Option<u32> {
        let b = self.bytes(4)?;
        Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    /// Takes `n` bytes.
    pub fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let b = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(b)
    }
}

/// Skips a possibly compressed name (RFC 1035 §4.1.4) without following
/// pointers: a pointer ends the name in place.
pub fn skip_name(c: &mut Cursor<'_>) -> Option<()> {
    let mut total = 0usize;
    loop {
        let len = c.u8()?;
        match len & 0xc0 {
            0x00 => {
                if len == 0 {
                    return Some(());
                }
                total += len as usize + 1;
                if total > 255 {
                    return None;
                }
                c.bytes(len as usize)?;
            }
            0xc0 => {
                c.u8()?;
                return Some(());
            }
            _ => return None,
        }
    }
}

/// Whether two names are the same name (RFC 4343: ASCII case ignored).
/// The same answer as hickory's `==`, for a fraction of its cost on the
/// cold path, where chains, NS sets and glue are matched by name: hickory
/// folds case byte by byte through a generic comparison; this compares
/// whole labels.
pub fn same_name(a: &hickory_proto::rr::Name, b: &hickory_proto::rr::Name) -> bool {
    if a.is_fqdn() != b.is_fqdn() {
        return false;
    }
    let (x, y) = (a.iter(), b.iter());
    // Label counts first (free), then each label, exact bytes first: the
    // names compared on the cold path nearly always share their case.
    x.len() == y.len() && x.zip(y).all(|(l, r)| l == r || l.eq_ignore_ascii_case(r))
}

/// Appends `name` in lower-cased, uncompressed wire form: the form cache
/// and store keys use, hashed as plain bytes (RFC 4343: names compare
/// case-insensitively).
pub fn push_lower_wire(name: &hickory_proto::rr::Name, out: &mut Vec<u8>) {
    for label in name.iter() {
        out.push(label.len() as u8);
        out.extend(label.iter().map(u8::to_ascii_lowercase));
    }
    out.push(0);
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::Name;
    use std::str::FromStr;

    /// `same_name` gives hickory's `==` on names that differ in case, in
    /// one byte, in label count, in where labels split, and in being
    /// fully qualified.
    #[test]
    fn same_name_agrees_with_hickory_equality() {
        let names = [
            "www.example.com.",
            "WWW.Example.COM.",
            "www.example.com",
            "www.example.org.",
            "ww.example.com.",
            "wwwe.xample.com.",
            "example.com.",
            "a.www.example.com.",
            ".",
            "xn--bcher-kva.example.",
        ];
        for a in names {
            for b in names {
                let (x, y) = (Name::from_str(a).unwrap(), Name::from_str(b).unwrap());
                assert_eq!(same_name(&x, &y), x == y, "{a} vs {b}");
            }
        }
    }
}
