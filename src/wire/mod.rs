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
